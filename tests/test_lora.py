"""LoRA recovery: adapters start as the identity, train only themselves, merge into same-shaped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prunec
from models import ALL_CASES, randomize_
from prunec.cli import app
from prunec.lora import LoRAConfig, attach_lora, linear_weights, merge_lora
from prunec.recovery import RecoveryConfig, distill
from prunec.testing import max_abs_diff

pytestmark = pytest.mark.slow  # distillation/streaming/fuzzing: tens of seconds on 2 cores


def _pruned():
    model, args, kwargs = ALL_CASES["llama_tied"]()
    randomize_(model)
    calib = [(torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    result = prunec.prune(model, args, kwargs, ratio=0.5, kinds=("channels",))
    return model, result.module, args, calib


def test_adapters_start_as_identity_and_skip_embeddings() -> None:
    _, gm, args, _ = _pruned()
    names = linear_weights(gm)
    assert "model.embed_tokens.weight" not in names  # tied lm_head reads the embedding table
    assert "model.layers.0.mlp.down_proj.weight" in names
    with torch.no_grad():
        before = gm(*args)
    params = attach_lora(gm, LoRAConfig(rank=2))
    assert len(params) == 2 * len(names)
    with torch.no_grad():
        assert max_abs_diff(before, gm(*args)) == 0.0
    assert merge_lora(gm) == len(names)
    assert not any("parametrizations" in n for n, _ in gm.named_parameters())


def test_lora_distillation_trains_adapters_and_merges() -> None:
    teacher, gm, args, calib = _pruned()
    shapes = {n: p.shape for n, p in gm.named_parameters()}
    norms = {n: float(p.detach().norm()) for n, p in gm.named_parameters()}
    losses = distill(gm, teacher, calib, RecoveryConfig(steps=12, lr=1e-2, lora_rank=4))
    assert losses[-1] < losses[0]
    assert {n: p.shape for n, p in gm.named_parameters()} == shapes  # merged: same tensors as before
    changed = {n for n, p in gm.named_parameters() if abs(float(p.detach().norm()) - norms[n]) > 1e-6}
    assert "model.layers.0.mlp.down_proj.weight" in changed
    assert "model.embed_tokens.weight" not in changed and "model.norm.weight" not in changed
    assert all(not p.requires_grad or p.grad is None for p in gm.parameters())


def test_cli_recover_with_lora_writes_back(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"), "--ratio", "0.3",
                                      "--recover", "--recover-steps", "3", "--lora-rank", "4", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    recovery = summary["recovery"]
    assert {k: recovery[k] for k in ("steps", "lr", "lora_rank", "batch", "device")} == \
        {"steps": 3, "lr": 5e-4, "lora_rank": 4, "batch": 8, "device": "cuda" if torch.cuda.is_available() else "cpu"}
    assert len(summary["recovery_losses"]) == 3
    hf = AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    program = torch.export.load(str(out / "model.pt2")).module()
    ids = torch.from_numpy(np.load(tmp_path / "ids.npz")["arr_0"][:1])
    with torch.no_grad():
        assert max_abs_diff(program(ids), hf(ids).logits) <= 1e-4


@pytest.mark.parametrize("argv,message", [
    (["--lora-rank", "4"], "add --recover"),
    (["--lora-rank", "-1", "--recover"], "R >= 1"),
])
def test_lora_rank_refusals(tmp_path, argv, message) -> None:
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    result = CliRunner().invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"), *argv,
                                      "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and message in result.output


def test_encoder_recovery_matches_hidden_states() -> None:
    model, args, kwargs = ALL_CASES["bert"]()
    randomize_(model)
    calib = [(torch.randint(0, 96, args[0].shape, generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    result = prunec.prune(model, args, kwargs, ratio=0.5, kinds=("channels",))
    losses = distill(result.module, model, calib, RecoveryConfig(steps=10, lr=1e-2, lora_rank=4))
    assert losses[-1] < losses[0]
    assert 0.0 < losses[0] < 10.0  # a relative squared error of hidden states, not a KL over features
