"""GGUF export: a pruned LLaMA-family model written for llama.cpp, uniform or with per-layer widths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import prunec
from models import llama_gqa, randomize_
from prunec.errors import ConfigError
from prunec.targets import llamacpp_runtime
from prunec.targets.gguf_writer import write_gguf

gguf = pytest.importorskip("gguf")
needs_llamacpp = pytest.mark.skipif(llamacpp_runtime.missing() is not None,
                                    reason=llamacpp_runtime.missing() or "")


def _pruned(kinds=("channels", "heads"), allocation="uniform", ratio=0.3):
    model, args, _ = llama_gqa()
    randomize_(model)
    model.eval()
    if allocation != "uniform":
        # Layer 1's FFN scores lower, so ranking raw scores across layers prunes it more.
        with torch.no_grad():
            for proj in ("gate_proj", "up_proj"):
                getattr(model.model.layers[1].mlp, proj).weight.mul_(0.3)
    result = prunec.prune(model, args, ratio=ratio, kinds=kinds, allocation=allocation)
    return model, args, result


def _write(tmp_path, model, result, **kw):
    path = tmp_path / "model.gguf"
    summary = write_gguf(result.module.state_dict(), model.config, path, **kw)
    return path, summary


def _field(path, key):
    return gguf.GGUFReader(path).fields[key].contents()


def test_uniform_model_round_trips_through_transformers_gguf_loader(tmp_path) -> None:
    """transformers un-permutes q/k and reads the hyper-parameters from the file: the same function
    comes back, residual width included (RMS norms rescaled to the pruned width)."""
    from transformers import AutoModelForCausalLM

    model, args, result = _pruned(kinds=("channels", "heads", "residual"))
    path, summary = _write(tmp_path, model, result)
    assert summary.arch == "llama" and summary.uniform and summary.hidden < model.config.hidden_size
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (back(*args).logits - result.module(*args).logits).abs().max().item()
    assert diff <= 1e-4


def test_per_layer_widths_are_written_as_deci_arrays(tmp_path) -> None:
    model, _, result = _pruned(kinds=("channels",), allocation="knapsack", ratio=0.4)
    path, summary = _write(tmp_path, model, result)
    ffn = [w.ffn for w in summary.layers]
    assert len(set(ffn)) > 1, "knapsack allocation should give different FFN widths here"
    assert summary.arch == "deci"
    assert list(_field(path, "deci.feed_forward_length")) == ffn
    assert _field(path, "deci.attention.key_length") == summary.head_dim


@pytest.mark.parametrize("round_to,fallback", [(1, {"blk.0.ffn_down.weight", "blk.1.ffn_down.weight"}), (32, set())])
def test_unaligned_rows_stay_in_f16_when_quantised(tmp_path, round_to, fallback) -> None:
    """Q8_0 blocks are 32 along a row: FFN 128 -> 90 leaves ffn_down's rows unquantisable; --round-to 32
    keeps 96 and every weight quantises."""
    from models import DECODER, _hf, _ids

    model = randomize_(_hf("LlamaConfig", "LlamaForCausalLM", **{**DECODER, "hidden_size": 64,
                                                                   "intermediate_size": 128, "num_attention_heads": 4}))
    result = prunec.prune(model.eval(), (_ids(),), ratio=0.3, kinds=("channels",), round_to=round_to)
    _, summary = _write(tmp_path, model, result, gguf_type="q8_0")
    assert set(summary.fallback) == fallback


def test_unsupported_family_and_type_are_refused(tmp_path) -> None:
    model, _, result = _pruned()
    with pytest.raises(ConfigError, match="unknown GGUF type"):
        _write(tmp_path, model, result, gguf_type="q3_k")
    config = model.config.__class__(**{**model.config.to_dict(), "model_type": "llama"})
    config.model_type = "gpt2"
    with pytest.raises(ConfigError, match="GGUF export supports"):
        write_gguf(result.module.state_dict(), config, tmp_path / "x.gguf")


@needs_llamacpp
@pytest.mark.parametrize("allocation", ["uniform", "knapsack"])
def test_llamacpp_runs_the_file_and_matches_pytorch(tmp_path, allocation) -> None:
    model, args, result = _pruned(kinds=("channels", "heads"), allocation=allocation)
    path, _ = _write(tmp_path, model, result)
    llm = llamacpp_runtime.load(path, n_ctx=64, logits_all=True, f32_cache=True)
    ids = args[0][0].tolist()
    got = llamacpp_runtime.sequence_logits(llm, ids)
    with torch.no_grad():
        want = result.module(*args).logits[0].numpy()
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max())
    # Greedy decoding with llama.cpp's KV cache follows PyTorch's greedy continuation.
    tokens = list(llamacpp_runtime.greedy(llm, ids, 6))
    seq = list(ids)
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(result.module(torch.tensor([seq])).logits[0, -1].argmax()))
    assert tokens == seq[len(ids):]


# --- prunec compile --backend gguf, generate, bench -------------------------------------------

@pytest.fixture(scope="module")
def gguf_folder(tmp_path_factory):
    from typer.testing import CliRunner

    from genai_models import tiny_llm_dir
    from prunec.cli import app

    if llamacpp_runtime.missing():
        pytest.skip(llamacpp_runtime.missing())
    base = tmp_path_factory.mktemp("gguf")
    src = tiny_llm_dir(base / "src")
    out = base / "out"
    result = CliRunner().invoke(app, ["compile", str(src), "--backend", "gguf", "--ratio", "0.3", "--kinds", "channels",
                                      "--seq-len", "12", "--repeat", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_compile_writes_a_verified_gguf_with_aligned_widths(gguf_folder) -> None:
    import json

    manifest = json.loads((gguf_folder / "manifest.json").read_text())
    art, check = manifest["artifact"], manifest["verification"]
    assert art["kind"] == "gguf" and art["arch"] == "llama" and art["tokenizer"]
    assert all(w["ffn"] % 32 == 0 and w["ffn"] < 128 for w in art["layer_widths"])  # rounded for llama.cpp's blocks
    assert check["greedy_agreement"] >= 0.9 and check["example_logits_max_abs_diff"] <= 1e-3 * check["example_logits_scale"]
    assert manifest["latency"]["decode_tokens_per_s"] > 0
    assert (gguf_folder / "model.gguf").is_file() and "Greedy continuations" in (gguf_folder / "report.md").read_text()


def test_generate_and_bench_run_the_gguf_in_llamacpp(gguf_folder) -> None:
    from typer.testing import CliRunner

    from prunec.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["generate", str(gguf_folder), "--prompt", "The capital of France is",
                                 "--max-new-tokens", "5"])
    assert result.exit_code == 0 and result.output.strip(), result.output
    chat = runner.invoke(app, ["generate", str(gguf_folder), "--chat", "--prompt", "hi", "--max-new-tokens", "4"])
    assert chat.exit_code == 0, chat.output
    bench = runner.invoke(app, ["bench", str(gguf_folder), "--prefill", "16", "--decode", "8", "--repeat", "1", "--json"])
    assert bench.exit_code == 0, bench.output
    figures = __import__("json").loads(bench.stdout)
    assert figures["prefill_tokens_per_s"] > 0 and figures["decode_tokens_per_s"] > 0 and figures["peak_rss_mb"] > 0


def test_gguf_backend_refuses_other_families_before_pruning(tmp_path) -> None:
    from typer.testing import CliRunner

    from prunec.cli import app

    if llamacpp_runtime.missing():
        pytest.skip(llamacpp_runtime.missing())
    result = CliRunner().invoke(app, ["compile", "models:gpt2", "--backend", "gguf", "-o", str(tmp_path / "o")])
    assert result.exit_code == ConfigError.exit_code and "--backend gguf writes" in result.output, result.output
    assert not (tmp_path / "o").exists()


@needs_llamacpp
def test_biases_from_bias_compensation_reach_llamacpp(tmp_path) -> None:
    """Calibrated pruning folds removed inputs into o_proj/down_proj biases; llama.cpp must apply them."""
    model, args, _ = llama_gqa()
    randomize_(model)
    model.eval()
    calib = [(torch.randint(0, 96, args[0].shape, generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    result = prunec.prune(model, args, ratio=0.3, kinds=("channels", "heads"), importance="fluctuation",
                          calibration=calib, bias_compensation=True)
    biases = [k for k in result.module.state_dict() if k.endswith(("down_proj.bias", "o_proj.bias"))]
    assert biases, "bias compensation should have added biases"
    path, _ = _write(tmp_path, model, result)
    llm = llamacpp_runtime.load(path, n_ctx=64, logits_all=True, f32_cache=True)
    got = llamacpp_runtime.sequence_logits(llm, args[0][0].tolist())
    with torch.no_grad():
        want = result.module(*args).logits[0].numpy()
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max())
