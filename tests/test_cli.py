"""The command line: inspect, prune, --json, exit codes and atomic output."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from prunec.cli import app

runner = CliRunner()


def test_inspect_lists_groups_as_json() -> None:
    result = runner.invoke(app, ["inspect", "models:llama_gqa", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    kinds = {g["kind"] for g in data["groups"] if not g["frozen"]}
    assert {"channels", "heads", "residual"} <= kinds
    heads = [g for g in data["groups"] if g["kind"] == "heads"]
    assert heads[0]["size"] == 6 and heads[0]["kv_groups"] == 2
    assert data["params"] > 0 and data["flops"] > 0


def test_inspect_table_names_frozen_reasons() -> None:
    result = runner.invoke(app, ["inspect", "models:bert", "--frozen"])
    assert result.exit_code == 0, result.output
    assert "heads" in result.stdout and "model output" in result.stdout


def test_prune_writes_program_and_reports(tmp_path) -> None:
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "models:resnet", "--ratio", "0.3", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["params_after"] < summary["params_before"]
    assert summary["flops_after"] < summary["flops_before"]
    assert sorted(p.name for p in out.iterdir()) == ["model.pt2", "report.json", "report.md"]
    program = torch.export.load(str(out / "model.pt2")).module()
    logits = program(torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, 5)
    report = json.loads((out / "report.json").read_text())
    assert report["removed"] and report["summary"]["ratio"] == 0.3


def test_pruned_pt2_can_be_inspected_again(tmp_path) -> None:
    out = tmp_path / "pruned"
    assert runner.invoke(app, ["prune", "models:residual_mlp", "-o", str(out)]).exit_code == 0
    result = runner.invoke(app, ["inspect", str(out / "model.pt2"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["prunable"] >= 1


@pytest.mark.parametrize("argv,code,message", [
    (["prune", "models:residual_mlp", "--ratio", "1.2", "-o", "{tmp}/x"], 2, "ratio must be in [0, 1)"),
    (["prune", "models:residual_mlp", "--kinds", "filters", "-o", "{tmp}/x"], 2, "unknown kind"),
    (["prune", "no/such/model", "-o", "{tmp}/x"], 3, "not found"),
    (["inspect", "no_such_module_xyz:factory"], 3, "cannot import"),
    (["inspect", "test_errors:DataDependent"], 3, "returned only a model"),
])
def test_bad_input_exits_with_one_line(tmp_path, argv, code, message) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = runner.invoke(app, argv)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_existing_output_is_refused_and_kept(tmp_path) -> None:
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["prune", "models:residual_mlp", "-o", str(out)])
    assert result.exit_code == 6
    assert "already exists" in result.output
    assert (out / "mine.txt").read_text() == "keep me"


def test_untraceable_model_exits_4(tmp_path) -> None:
    result = runner.invoke(app, ["inspect", "test_cli:untraceable"])
    assert result.exit_code == 4
    assert "cannot trace" in result.output


def untraceable():
    from test_errors import DataDependent

    return DataDependent(), (torch.randn(2, 4),)


def test_prune_hf_model_writes_a_reloadable_directory(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--ratio", "0.3", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hf_directory"] == "hf"
    model = AutoModelForCausalLM.from_pretrained(out / "hf")
    assert model.config.intermediate_size == 64 - round(0.3 * 64)
    assert model.config.num_attention_heads == 4 and model.config.num_key_value_heads == 2


def test_prune_with_calibration_budget_and_steps(tmp_path) -> None:
    import numpy as np

    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(10, 8)))
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"),
                                 "--budget", "params=0.8", "--kinds", "channels,heads", "--steps", "2",
                                 "--max-step-regression", "100", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["importance"] == "fluctuation" and summary["reconstruct"] is True
    assert summary["kinds"] == ["channels", "heads"]
    assert [s["step"] for s in summary["schedule"]] == [1, 2]
    assert 0.8 <= summary["non_embedding_params_after"] / summary["non_embedding_params_before"] <= 0.85
    assert summary["hf_directory"] == "hf"


def test_steps_without_budget_is_refused(tmp_path) -> None:
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--steps", "3", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--steps needs a --budget" in result.output


def test_check_passes_and_fails(tmp_path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tk_models, pre_tokenizers

    # A tiny word-level tokenizer so that `check` can read text.
    vocab = {w: i for i, w in enumerate(["[UNK]"] + [f"w{i}" for i in range(95)])}
    tok = Tokenizer(tk_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    from models import DECODER

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**DECODER))
    base.save_pretrained(tmp_path / "base")
    fast.save_pretrained(tmp_path / "base")
    text = tmp_path / "eval.txt"
    text.write_text(" ".join(f"w{(i * 7) % 95}" for i in range(400)))
    out = tmp_path / "pruned"
    assert runner.invoke(app, ["prune", str(tmp_path / "base"), "--ratio", "0.5", "-o", str(out)]).exit_code == 0
    ok = runner.invoke(app, ["check", str(tmp_path / "base"), str(out / "hf"), "--data", str(text),
                             "--seq-len", "32", "--windows", "4", "--max-ratio", "1000", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["passed"] is True
    bad = runner.invoke(app, ["check", str(tmp_path / "base"), str(out / "hf"), "--data", str(text),
                              "--seq-len", "32", "--windows", "4", "--max-ratio", "0.5"])
    assert bad.exit_code == 7
    assert "regressed" in bad.output


def test_prune_with_recovery(tmp_path) -> None:
    import numpy as np

    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"), "--ratio", "0.3",
                                 "--recover", "--recover-steps", "3", "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert len(summary["recovery_losses"]) == 3
    assert summary["kinds"] == ["channels"]  # the calibrated default


def test_recover_without_calibration_is_refused(tmp_path) -> None:
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--recover", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--recover needs calibration data" in result.output


def test_check_cosine_feeds_a_static_pt2_its_traced_length(tmp_path) -> None:
    # Pruned heads cannot be written back to a BERT config, so the encoder is a .pt2 with the
    # sequence length it was traced with; sentences of other lengths are padded/truncated to it.
    from tokenizers import Tokenizer, models as tk_models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]"] + [f"w{i}" for i in range(94)])}
    tok = Tokenizer(tk_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=96, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path / "base")
    fast.save_pretrained(tmp_path / "base")
    out = tmp_path / "pruned"
    pruned = runner.invoke(app, ["prune", str(tmp_path / "base"), "--ratio", "0.5", "--kinds", "channels,heads",
                                 "--seq-len", "16", "-o", str(out)])
    assert pruned.exit_code == 0, pruned.output
    assert (out / "model.pt2").is_file() and not (out / "hf").exists()
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(" ".join(f"w{(i * 7 + j) % 94}" for j in range(3 + 5 * i)) for i in range(6)))
    ok = runner.invoke(app, ["check", str(tmp_path / "base"), str(out / "model.pt2"), "--data", str(text),
                             "--metric", "cosine", "--min-cosine", "-1", "--json"])
    assert ok.exit_code == 0, ok.output
    value = json.loads(ok.stdout)["value"]
    assert -1.0 <= value < 0.99999  # half the units are gone: not the base's embeddings
    bad = runner.invoke(app, ["check", str(tmp_path / "base"), str(out / "model.pt2"), "--data", str(text),
                              "--metric", "cosine", "--min-cosine", "0.99999"])
    assert bad.exit_code == 7 and "regressed" in bad.output


def test_prune_round_to_keeps_aligned_widths(tmp_path) -> None:
    """--round-to N: every pruned FFN keeps a multiple of N units (what llama.cpp's kernels want)."""
    from transformers import AutoConfig

    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--ratio", "0.3", "--kinds", "channels",
                                 "--round-to", "16", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    config = AutoConfig.from_pretrained(out / "hf")
    assert config.intermediate_size % 16 == 0 and config.intermediate_size < 64  # 64 * 0.7 = 44.8 -> 48


def test_round_to_is_refused_with_stream(tmp_path) -> None:
    result = runner.invoke(app, ["prune", str(tmp_path), "--stream", "--round-to", "32", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--round-to needs the whole model" in result.output, result.output


def test_version_flag() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("prunec 0."), result.output
