"""Streaming pruning of a sharded safetensors checkpoint equals in-memory pruning, and reloads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prunec.cli import app
from prunec.models import load_model
from prunec.pipeline import PruneJob, run_pruning
from prunec.streaming import stream_prune

pytestmark = pytest.mark.slow  # distillation/streaming/fuzzing: tens of seconds on 2 cores

runner = CliRunner()
# A few-MB LLaMA with GQA, saved as many shards so that blocks straddle shard boundaries.
CONFIG = dict(vocab_size=256, hidden_size=48, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, architectures=["LlamaForCausalLM"])).eval()
    model.save_pretrained(root / "ckpt", max_shard_size="60KB")
    ids = torch.randint(0, CONFIG["vocab_size"], (6, 16), generator=torch.Generator().manual_seed(1))
    np.savez(root / "calib.npz", ids.numpy())
    return root


def _in_memory(ckpt: Path, job: PruneJob) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, tuple[int, ...]]]]:
    outcome = run_pruning(load_model(str(ckpt)), job)
    removed: dict[int, dict[str, tuple[int, ...]]] = {}
    for gid, units in outcome.result.removed.items():
        group = outcome.result.analysis.groups[gid]
        block = int(re.search(r"model\.layers\.(\d+)\.", group.label).group(1))
        removed.setdefault(block, {})[group.kind] = tuple(units)
    return outcome.result.to_pretrained().state_dict(), removed


@pytest.mark.parametrize("kinds,importance,reconstruct", [
    ("channels", "fluctuation", True),          # the calibrated default recipe
    ("channels,heads", "activation", False),
    ("channels,heads", "l2", False),            # no calibration at all
])
def test_streamed_equals_in_memory(checkpoint, tmp_path, kinds, importance, reconstruct) -> None:
    from transformers import AutoModelForCausalLM

    calib = checkpoint / "calib.npz" if importance != "l2" else None
    job = PruneJob(ratio=0.25, kinds=kinds, importance=importance, calib=calib, reconstruct=reconstruct)
    expected_state, expected_removed = _in_memory(checkpoint / "ckpt", job)
    outcome = stream_prune(checkpoint / "ckpt", tmp_path / "out", job)
    assert outcome.removed == expected_removed
    assert all(units for block in outcome.removed.values() for units in block.values())
    streamed = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    assert sorted(streamed) == sorted(expected_state)
    for name, tensor in expected_state.items():
        assert torch.equal(streamed[name], tensor), name


@pytest.mark.parametrize("reconstruct,bias_compensation", [(True, False), (False, True)])
def test_streamed_bf16_checkpoint_equals_in_memory(checkpoint, tmp_path, reconstruct, bias_compensation) -> None:
    """A bf16 checkpoint (as released LLMs are): computed in float32, the untouched weights parked
    during the refit and read again, written back in bf16 — equal to in-memory pruning cast to bf16."""
    from transformers import AutoModelForCausalLM

    ckpt = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(checkpoint / "ckpt").to(torch.bfloat16).save_pretrained(ckpt, max_shard_size="60KB")
    job = PruneJob(ratio=0.25, kinds="channels", importance="fluctuation", calib=checkpoint / "calib.npz",
                   reconstruct=reconstruct, bias_compensation=bias_compensation)
    expected_state, expected_removed = _in_memory(ckpt, job)
    outcome = stream_prune(ckpt, tmp_path / "out", job)
    assert outcome.removed == expected_removed
    streamed = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.bfloat16).state_dict()
    assert sorted(streamed) == sorted(expected_state)
    for name, tensor in expected_state.items():
        assert streamed[name].dtype == torch.bfloat16
        assert torch.equal(streamed[name], tensor.to(torch.bfloat16)), name


def test_cli_stream_writes_a_reloadable_directory(checkpoint, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", str(checkpoint / "ckpt"), "--stream", "--calib", str(checkpoint / "calib.npz"),
                                 "--ratio", "0.5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "streamed" in result.output
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.intermediate_size == CONFIG["intermediate_size"] // 2
    logits = model(torch.zeros(1, 5, dtype=torch.long)).logits
    assert logits.shape == (1, 5, CONFIG["vocab_size"]) and torch.isfinite(logits).all()
    assert (out / "report.json").exists() and (out / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("extra,code,message", [
    (["--kinds", "residual"], 2, "residual width couples every block"),
    (["--allocation", "global"], 2, "only --allocation uniform"),
    (["--importance", "taylor", "--calib", "CALIB"], 2, "taylor needs gradients"),
    (["--budget", "params=0.8"], 2, "--budget needs the whole model"),
])
def test_cli_stream_refuses_what_it_cannot_do(checkpoint, tmp_path, extra, code, message) -> None:
    extra = [str(checkpoint / "calib.npz") if e == "CALIB" else e for e in extra]
    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", str(checkpoint / "ckpt"), "--stream", "-o", str(out), *extra])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not out.exists()


def test_cli_stream_needs_safetensors(tmp_path) -> None:
    from transformers import LlamaConfig

    LlamaConfig(**CONFIG, architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path / "cfg")
    result = runner.invoke(app, ["prune", str(tmp_path / "cfg"), "--stream", "-o", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "safetensors" in result.output
    assert not (tmp_path / "out").exists()
