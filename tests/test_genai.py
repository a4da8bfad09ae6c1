"""Decoder folders: `prunec compile` of a causal LM generates with stock onnxruntime-genai, its greedy
tokens are the pruned PyTorch model's, and `prunec generate` / `prunec bench` work on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

og = pytest.importorskip("onnxruntime_genai", reason="decoder folders need onnxruntime-genai (pip install 'prunec[onnx]')")
pytest.importorskip("transformers")

from genai_models import tiny_llm_dir  # noqa: E402
from prunec.cli import app  # noqa: E402
from prunec.compile import CompileJob  # noqa: E402
from prunec.compile_llm import choose_artifact  # noqa: E402
from prunec.errors import ConfigError  # noqa: E402
from prunec.llm_verify import positional_agreement  # noqa: E402
from prunec.models import load_model  # noqa: E402
from prunec.pipeline import PruneJob, run_pruning  # noqa: E402

runner = CliRunner()
SEQ = 32  # traced length: prompt + new tokens of the graph oracle below fit in it
PROMPT = "The capital of France is"


def _compile(src: Path, out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["compile", str(src), "-o", str(out), "--ratio", "0.25", "--seq-len", str(SEQ),
                               "--no-round-widths", "--repeat", "1", *extra])


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    return tiny_llm_dir(tmp_path_factory.mktemp("genai") / "tiny-llama")


@pytest.fixture(scope="module")
def folder(llm_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("genai-out") / "decoder"
    result = _compile(llm_dir, out)
    assert result.exit_code == 0, result.output
    return out


def _graph_greedy(module: torch.nn.Module, ids: list[int], new: int) -> list[int]:
    """Greedy decoding with the pruned *graph* (static length SEQ): a causal model's logits at position
    t depend only on tokens <= t, so the prompt goes first and the padding after it is never seen."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(new):
            window = torch.tensor([out + [0] * (SEQ - len(out))])
            out.append(int(module(window).logits[0, len(out) - 1].argmax()))
    return out[len(ids):]


def _og_greedy(path: Path, ids: list[int], new: int) -> list[int]:
    model = og.Model(str(path))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + new, min_length=len(ids) + new)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def test_folder_generates_with_stock_genai_and_matches_the_pruned_graph(llm_dir, folder) -> None:
    loaded = load_model(str(llm_dir), seq_len=SEQ)
    pruned = run_pruning(loaded, PruneJob(ratio=0.25)).result.module  # what compile pruned (l2 is deterministic)
    ids = loaded.tokenizer.encode(PROMPT)
    new = SEQ - len(ids)
    # min_length holds back end-of-sequence, so compare only up to the graph's first one.
    want = _graph_greedy(pruned, ids, new)
    got = _og_greedy(folder, ids, new)
    eos = loaded.tokenizer.eos_token_id
    stop = want.index(eos) if eos in want else len(want)
    assert stop >= 8 and got[:stop] == want[:stop]


def test_manifest_records_the_decoder(folder) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    art = manifest["artifact"]
    assert art["kind"] == "onnxruntime-genai" and art["max_context"] == 128 and art["precision"] == "fp32"
    # The default kinds without calibration: 25% of the FFN units and of the residual width, in every layer
    # (a pruned hidden size reaches the builder through the rescaled RMSNorm weights and epsilon).
    assert art["layer_widths"] == [{"hidden": 48, "heads": 4, "kv_heads": 2, "head_dim": 16, "ffn": 96}] * 2
    check = manifest["verification"]
    assert check["metric"] == "greedy_token_agreement" and check["greedy_agreement"] == 1.0
    assert check["first_token_logits_max_abs_diff"] < 1e-3
    names = {f["path"] for f in manifest["files"]}
    assert {"model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())
    assert {"past_key_values.0.key", "attention_mask"} <= {s["name"] for s in manifest["inputs"]}
    assert manifest["latency"]["decode_tokens_per_s"] > 0
    assert "Greedy continuations" in (folder / "report.md").read_text()


def test_generate_cli_streams_the_greedy_continuation(folder) -> None:
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ids = [int(t) for t in tokenizer.encode(PROMPT)]
    want = tokenizer.decode(_og_greedy(folder, ids, 6))
    result = runner.invoke(app, ["generate", str(folder), "--prompt", PROMPT, "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    # The EOS token, if greedy picks it, ends generate early and decodes to nothing.
    assert result.stdout.rstrip("\n") and want.startswith(result.stdout.rstrip("\n"))


def test_generate_chat_applies_the_template(folder) -> None:
    from prunec.generate import open_decoder, prompt_tokens

    decoder = open_decoder(folder)
    ids = prompt_tokens(decoder, "hi", chat=True)
    # ChatML: the special tokens are there (decode leaves them out of the text).
    assert ids.count(decoder.tokenizer.to_token_id("<|im_start|>")) == 2
    assert ids.count(decoder.tokenizer.to_token_id("<|im_end|>")) == 1
    assert decoder.tokenizer.decode(ids) == "user\nhi\nassistant\n"
    result = runner.invoke(app, ["generate", str(folder), "--chat", "--prompt", "hi", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output


def test_generate_fails_cleanly_without_a_decoder(tmp_path, folder) -> None:
    result = runner.invoke(app, ["generate", str(tmp_path / "nothing"), "--prompt", "hi"])
    assert result.exit_code == 2 and "has no manifest.json" in result.output
    graph = tmp_path / "graph"
    graph.mkdir()
    (graph / "manifest.json").write_text(json.dumps({"backend": "onnx", "inputs": [], "outputs": []}))
    result = runner.invoke(app, ["generate", str(graph), "--prompt", "hi"])
    assert result.exit_code == 2 and "not a text decoder" in result.output
    result = runner.invoke(app, ["generate", str(folder), "--prompt", "hi", "--max-new-tokens", "500"])
    assert result.exit_code == 2 and "context of 128" in result.output
    x = tmp_path / "x.npz"
    x.write_bytes(b"")
    result = runner.invoke(app, ["run", str(folder), "--inputs", str(x), "--output", str(tmp_path / "y.npz")])
    assert result.exit_code == 2 and "prunec generate" in result.output


def test_bench_reports_the_four_figures(folder) -> None:
    result = runner.invoke(app, ["bench", str(folder), "--prefill", "16", "--decode", "16", "--repeat", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    for key in ("time_to_first_token_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_mb"):
        assert figures[key] > 0, key
    result = runner.invoke(app, ["bench", str(folder), "--prefill", "100", "--decode", "100"])
    assert result.exit_code == 2 and "context of 128" in result.output


@pytest.mark.parametrize("argv,message", [
    (["--allocation", "global"], "--allocation uniform"),
    (["--quantize", "dynamic"], "--artifact graph"),
    (["--artifact", "genai", "--backend", "tvm"], "--backend onnx"),
])
def test_decoder_refusals_exit_2_before_writing(llm_dir, tmp_path, argv, message) -> None:
    out = tmp_path / "out"
    result = _compile(llm_dir, out, *argv)
    assert result.exit_code == 2 and message in result.output and not out.exists()


def test_auto_writes_a_graph_for_models_without_a_tokenizer_and_genai_insists() -> None:
    loaded = load_model("models:llama_gqa")
    kind, reason = choose_artifact(loaded, CompileJob().resolved())
    assert kind == "graph" and "tokenizer" in reason
    with pytest.raises(ConfigError, match="tokenizer"):
        choose_artifact(loaded, CompileJob(artifact="genai").resolved())
    assert choose_artifact(load_model("models:resnet"), CompileJob().resolved()) == ("graph", "")


def test_positional_agreement_counts_early_stops_as_misses() -> None:
    assert positional_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == (4, 4)
    assert positional_agreement([1, 2, 3, 4], [1, 9, 3]) == (2, 4)
    assert positional_agreement([1, 2], [1, 2, 5, 6]) == (2, 4)


@pytest.mark.parametrize("mode,precision", [("int4-weights", "int4"), ("int8-weights", "int8")])
def test_weight_only_modes_use_the_builders_precision(llm_dir, tmp_path, mode, precision) -> None:
    import onnx

    out = tmp_path / "q"
    # A random 48-wide model loses more to 4-bit blocks than a trained one (SmolLM2-135M pruned: 0.75
    # teacher-forced at int4), so this test holds it to a lower agreement; exactness is the fp32 test's.
    result = _compile(llm_dir, out, "--quantize", mode, "--repeat", "0", "--min-agreement", "0.25")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact"]["precision"] == precision
    # Quantised folders are held to the teacher-forced agreement (see prunec.llm_verify.MIN_AGREEMENT).
    check = manifest["verification"]
    assert check["metric"] == "teacher_forced_token_agreement" and check["teacher_forced_agreement"] >= check["tolerance"]
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops


def test_agreement_below_the_threshold_exits_10_and_leaves_nothing(llm_dir, tmp_path) -> None:
    out = tmp_path / "q"
    result = _compile(llm_dir, out, "--quantize", "int4-weights", "--repeat", "0", "--min-agreement", "1.0")
    assert result.exit_code == 10 and "token agreement" in result.output and not out.exists()
