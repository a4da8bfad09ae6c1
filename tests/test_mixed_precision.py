"""bf16 autocast with a float32 output head (prunec.mixed_precision) and bf16 recovery."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prunec
from prunec.cli import app
from prunec.errors import ConfigError
from prunec.evaluate import logits_of
from prunec.mixed_precision import (autocast, check_precision, float32_output_head, float32_output_heads,
                                    output_product)
from prunec.recovery import RecoveryConfig, distill
from tests.models import ALL_CASES, randomize_

pytestmark = pytest.mark.slow  # distillation/streaming/fuzzing: tens of seconds on 2 cores

CPU = torch.device("cpu")
runner = CliRunner()


def _llama(case: str = "llama_tied"):
    model, args, _ = ALL_CASES[case]()
    randomize_(model)
    return model.eval(), args


def test_the_output_product_of_a_decoder_graph_is_its_lm_head() -> None:
    model, args = _llama()
    graph = prunec.trace(model, args).graph
    node = output_product(graph)
    assert node is not None and node.target == torch.ops.aten.linear.default
    weight = node.args[1]
    assert weight.op == "get_attr" and weight.target.endswith("weight")


def test_an_encoder_graph_has_no_output_product() -> None:
    # BERT's hidden state comes out of a layer norm, which autocast keeps in float32 anyway.
    model, args, _ = ALL_CASES["bert"]()
    assert output_product(prunec.trace(model.eval(), args).graph) is None


@pytest.mark.parametrize("traced", [False, True])
def test_bf16_autocast_keeps_the_logits_float32_and_close(traced: bool) -> None:
    model, args = _llama()
    module = prunec.trace(model, args) if traced else model
    with torch.no_grad():
        reference = logits_of(module(*args))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = logits_of(module(*args))
        with float32_output_heads("bf16", module), autocast("bf16", CPU):
            kept = logits_of(module(*args))
    assert plain.dtype == torch.bfloat16  # what autocast alone gives
    assert kept.dtype == torch.float32
    assert torch.allclose(kept, reference, atol=0.1, rtol=0.05)  # only the body ran in bf16
    with torch.no_grad():
        assert torch.equal(logits_of(module(*args)), reference)  # restored on exit


def test_the_graph_is_restored_after_the_float32_head() -> None:
    model, args = _llama()
    gm = prunec.trace(model, args)
    code = gm.code
    with float32_output_head(gm) as found:
        assert found and gm.code != code
    assert gm.code == code


def test_fp32_precision_changes_nothing() -> None:
    model, args = _llama()
    with torch.no_grad(), float32_output_heads("fp32", model), autocast("fp32", CPU):
        assert logits_of(model(*args)).dtype == torch.float32
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_recovery_lowers_the_loss_and_keeps_float32_weights() -> None:
    model, args = _llama("llama_gqa")
    student = prunec.prune(model, args, ratio=0.5, kinds=("channels",)).module
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 96, args[0].shape, generator=g),) for _ in range(6)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = distill(student, model, batches,
                     RecoveryConfig(steps=25, lr=3e-3, batch_size=3, device="cpu", precision="bf16"))
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.dtype == torch.float32 for p in student.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # the teacher is untouched


def test_bf16_recovery_follows_the_fp32_loss_curve() -> None:
    # Autocast caches the bf16 copies of the weights for as long as its region lasts: a region around
    # the whole loop would train against the first step's weights (here: 0.067 vs 0.044 at the end).
    model, args = _llama("llama_gqa")
    student = prunec.prune(model, args, ratio=0.5, kinds=("channels",)).module
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 96, args[0].shape, generator=g),) for _ in range(6)]
    curves = {}
    for precision in ("fp32", "bf16"):
        config = RecoveryConfig(steps=25, lr=3e-3, batch_size=3, device="cpu", precision=precision)
        curves[precision] = distill(copy.deepcopy(student), model, batches, config)
    assert curves["bf16"] == pytest.approx(curves["fp32"], rel=0.05)


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; use one of fp32, bf16"):
        check_precision("fp16", CPU)
    model, args = _llama()
    student = prunec.prune(model, args, ratio=0.5, kinds=("channels",)).module
    with pytest.raises(ConfigError, match="unknown precision"):
        distill(student, model, [args], RecoveryConfig(steps=1, device="cpu", precision="half"))


def test_cli_recovers_in_bf16(tmp_path) -> None:
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"), "--ratio", "0.3",
                                 "--recover", "--recover-steps", "2", "--recover-precision", "bf16", "--device", "cpu",
                                 "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["recovery"]["precision"] == "bf16" and len(summary["recovery_losses"]) == 2
