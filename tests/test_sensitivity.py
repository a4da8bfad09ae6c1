"""Sensitivity allocation: probes equal the pruned function, budgets go where removal hurts least."""

from __future__ import annotations

import json
from contextlib import ExitStack

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prunec
from models import ALL_CASES, randomize_
from prunec.allocation import lowest_units
from prunec.cli import app
from prunec.importance import ScoringInputs
from prunec.prune import score_groups, select_groups
from prunec.sensitivity import SensitivityConfig, output_distortion, zeroed_units
from prunec.testing import max_abs_diff

pytestmark = pytest.mark.slow  # distillation/streaming/fuzzing: tens of seconds on 2 cores


def _calib(n: int = 3) -> list[tuple]:
    return [(torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(i)),) for i in range(n)]


def test_zeroed_units_compute_the_pruned_function_and_restore_weights() -> None:
    model, args, kwargs = ALL_CASES["llama_gqa"]()
    randomize_(model)
    analysis = prunec.analyze(model, args, kwargs)
    gm = analysis.graph_module
    groups = select_groups(analysis, ("channels", "heads"))
    tensors = {n: t for n, t in gm.state_dict().items()}
    scores = score_groups(analysis, groups, "l2", ScoringInputs(tensors))
    before = {n: t.clone() for n, t in tensors.items()}
    with ExitStack() as stack, torch.no_grad():
        for g in groups:
            keep = 40 if g.kind == "channels" else 4
            stack.enter_context(zeroed_units(gm, analysis, g, lowest_units(g, scores[g.id], g.size - keep)))
        zeroed = gm(*args)
    assert all(torch.equal(before[n], t) for n, t in gm.state_dict().items())
    pruned = prunec.prune(model, args, kwargs, widths={"channels": 40, "heads": 4}, importance="l2")
    with torch.no_grad():
        assert max_abs_diff(zeroed, pruned.module(*args)) <= 1e-5


def test_sensitivity_spends_the_budget_on_the_insensitive_layer() -> None:
    model, args, kwargs = ALL_CASES["llama_gqa"]()
    randomize_(model)
    with torch.no_grad():  # layer 0's FFN barely contributes: removing its units costs almost nothing
        model.model.layers[0].mlp.down_proj.weight.mul_(1e-3)
    calib = _calib()
    result = prunec.prune(model, args, kwargs, budget="params=0.85", kinds=("channels",), importance="l2",
                          allocation="sensitivity", calibration=calib,
                          sensitivity=SensitivityConfig(levels=(0.2, 0.4, 0.6, 0.8), batches=2))
    removed = {result.analysis.groups[g].label: len(u) for g, u in result.removed.items()}
    layer0 = removed.get("model.layers.0.mlp.gate_proj.weight[0]", 0)
    layer1 = removed.get("model.layers.1.mlp.gate_proj.weight[0]", 0)
    assert layer0 > layer1
    assert result.non_embedding_after >= 0.85 * result.non_embedding_before
    # Uniform allocation at the same budget distorts the outputs more.
    uniform = prunec.prune(model, args, kwargs, budget="params=0.85", kinds=("channels",), importance="l2",
                           calibration=calib)
    with torch.no_grad():
        reference = [model(*b).logits for b in calib]
    assert output_distortion(result.module, calib, reference) < output_distortion(uniform.module, calib, reference)


def test_sensitivity_on_a_non_language_model_uses_output_distance() -> None:
    model, args, kwargs = ALL_CASES["resnet"]()
    randomize_(model)
    calib = [(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(i)),) for i in range(2)]
    result = prunec.prune(model, args, kwargs, ratio=0.3, kinds=("channels",), allocation="sensitivity",
                          calibration=calib)
    sizes = {len(u) for u in result.removed.values()}
    assert result.params_after < result.params_before and len(sizes) >= 1


def test_sensitivity_needs_calibration() -> None:
    model, args, kwargs = ALL_CASES["llama_gqa"]()
    with pytest.raises(prunec.ConfigError, match="allocation 'sensitivity' needs calibration"):
        prunec.prune(model, args, kwargs, ratio=0.3, allocation="sensitivity")


def test_non_uniform_widths_refuse_hf_write_back_but_save_pt2(tmp_path) -> None:
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"),
                                      "--budget", "params=0.8", "--allocation", "sensitivity", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # The measured allocation gives the two layers different widths: no HF config can hold that.
    assert "not uniform across layers" in summary["hf_directory"]
    assert not (out / "hf").exists()
    assert (out / "model.pt2").exists()


def test_coarse_groups_still_get_steps() -> None:
    """GQA heads come 3 per KV group here: levels that round to 0 heads must not block later levels."""
    from prunec.sensitivity import SensitivityAllocator

    model, args, kwargs = ALL_CASES["llama_gqa"]()
    analysis = prunec.analyze(model, args, kwargs)
    heads = [g for g in select_groups(analysis, ("heads",))]
    curves = {g.id: np.array([0.0, 0.1, 0.2]) for g in heads}
    allocator = SensitivityAllocator(curves, levels=(0.1, 0.4, 0.7))
    scores = {g.id: np.arange(g.size, dtype=float) for g in heads}
    plan = allocator(heads, scores, 0.3)
    assert sum(len(u) for u in plan.values()) >= 2 and all(len(u) % 2 == 0 for u in plan.values())
