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
    llm = llamacpp_runtime.load(path, n_ctx=64, logits_all=True)
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
