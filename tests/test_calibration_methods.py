"""Calibration data, calibration-driven importance, budgets, bias compensation and reconstruction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import prunec
from models import ALL_CASES, randomize_
from prunec.budget import Budget, ParamCounter
from prunec.calibration import CalibrationConfig, load_calibration
from prunec.importance import importance_names
from prunec.stats import collect_input_stats
from prunec.testing import max_abs_diff


class CharTokenizer:
    """A stand-in tokenizer: one id per character (enough to test text calibration)."""

    def __call__(self, text: str, return_tensors: str = "pt"):
        class Out:
            input_ids = torch.tensor([[ord(c) % 96 for c in text]])

        return Out()


def _calib_batches(n: int = 6, seq: int = 8) -> list[tuple]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 96, (2, seq), generator=gen),) for _ in range(n)]


def test_text_and_jsonl_calibration(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("hello world " * 20)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": "abc " * 10}) for _ in range(5)))
    cfg = CalibrationConfig(n_samples=3, seq_len=16)
    plain = load_calibration(tmp_path / "a.txt", CharTokenizer(), cfg)
    assert len(plain) == 3 and plain[0][0].shape == (1, 16)
    lines = load_calibration(tmp_path / "b.jsonl", CharTokenizer(), cfg)
    assert len(lines) == 3


@pytest.mark.parametrize("content,message", [
    ("", "is empty"),
    ("ab", "fewer than one sample"),
    ("{not json", "not valid JSON"),
])
def test_bad_calibration_files(tmp_path, content, message) -> None:
    path = tmp_path / ("c.jsonl" if "{" in content else "c.txt")
    path.write_text(content)
    with pytest.raises(prunec.ConfigError, match=message):
        load_calibration(path, CharTokenizer(), CalibrationConfig(n_samples=2, seq_len=16))


def test_npz_calibration(tmp_path) -> None:
    np.savez(tmp_path / "x.npz", np.random.rand(5, 3, 8, 8).astype("float32"))
    batches = load_calibration(tmp_path / "x.npz", None, CalibrationConfig(n_samples=4))
    assert len(batches) == 4 and batches[0][0].shape == (1, 3, 8, 8)


def test_streaming_stats_match_a_direct_computation() -> None:
    model, args, _ = ALL_CASES["residual_mlp"]()
    gm = prunec.trace(model, args)
    batches = [(torch.randn(3, 12, generator=torch.Generator().manual_seed(i)),) for i in range(4)]
    stats = collect_input_stats(gm, batches, covariance_for={"out.weight"})
    xs = torch.cat([b[0] for b in batches]).double()
    inp = stats.inputs["inp.weight"]
    assert inp.count == 12
    assert torch.allclose(inp.mean, xs.mean(0))
    assert torch.allclose(inp.norm, xs.pow(2).sum(0).sqrt())
    assert stats.gram["out.weight"].shape == (24, 24)


@pytest.mark.parametrize("importance", ["activation", "fluctuation", "taylor"])
def test_calibration_importance_removes_dead_units_exactly(importance) -> None:
    model, args, kwargs = ALL_CASES["llama_gqa"]()
    randomize_(model)
    from prunec.testing import choose_dead_units, kill_units

    analysis = prunec.analyze(model, args)
    units = choose_dead_units(analysis, 0.3, ("channels", "heads"), model=model)
    kill_units(model, analysis, units)
    with torch.no_grad():
        reference = model(*args)
    # Calibration batches must have the traced shape.
    calib = [(torch.randint(0, 96, args[0].shape, generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    result = prunec.prune(model, args, ratio=0.3, kinds=("channels", "heads"), importance=importance,
                          calibration=calib)
    assert result.removed == units
    with torch.no_grad():
        assert max_abs_diff(reference, result.module(*args)) <= 1e-5


def test_calibration_importance_without_data_is_refused() -> None:
    model, args, _ = ALL_CASES["residual_mlp"]()
    with pytest.raises(prunec.ConfigError, match="needs calibration data"):
        prunec.prune(model, args, importance="activation")
    with pytest.raises(prunec.ConfigError, match="needs calibration data"):
        prunec.prune(model, args, reconstruct=True)


def test_every_registered_importance_is_known() -> None:
    assert {"l1", "l2", "random", "activation", "fluctuation", "taylor"} <= set(importance_names())


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_params_budget_is_met_exactly_from_below(allocation) -> None:
    model, args, _ = ALL_CASES["llama_gqa"]()
    result = prunec.prune(model, args, budget="params=0.8", kinds=("channels", "heads"), allocation=allocation)
    kept = result.non_embedding_after / result.non_embedding_before
    assert 0.8 <= kept <= 0.85
    counted = ParamCounter(prunec.analyze(result.module, args)).count({})
    assert counted == result.non_embedding_after


@pytest.mark.parametrize("text", ["params=1.5", "flops", "params=abc", "size=0.5"])
def test_bad_budgets(text) -> None:
    with pytest.raises(prunec.ConfigError, match="budget"):
        Budget.parse(text)


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 6)
        self.down = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def test_bias_compensation_restores_a_constant_channel() -> None:
    torch.manual_seed(0)
    model = Wide().eval()
    with torch.no_grad():
        model.up.weight[2] = 0.0
        model.up.bias[2] = 1.5  # unit 2 is the constant relu(1.5): removing it loses down[:, 2] * 1.5
    x = torch.randn(16, 4)
    calib = [(x,)]
    with torch.no_grad():
        reference = model(x)
    plain = prunec.prune(model, (x,), ratio=1 / 6, kinds=("channels",), importance="fluctuation", calibration=calib)
    compensated = prunec.prune(model, (x,), ratio=1 / 6, kinds=("channels",), importance="fluctuation",
                               calibration=calib, bias_compensation=True)
    assert list(plain.removed.values()) == [(2,)], "a constant unit has zero fluctuation"
    with torch.no_grad():
        assert max_abs_diff(reference, plain.module(x)) > 0.1
        assert max_abs_diff(reference, compensated.module(x)) <= 1e-5
    assert compensated.module.get_parameter("down.bias").shape == (3,)


def _dependent_unit_model() -> Wide:
    """Unit 5 = 0.1 * (unit 0 + unit 1) before the relu, all positive so the relu is linear there.

    Its weights are the smallest, so L2 importance removes it; its output is not negligible.
    """
    torch.manual_seed(0)
    model = Wide().eval()
    with torch.no_grad():
        model.up.weight.copy_(model.up.weight.abs() + 1.0)
        model.up.bias.copy_(model.up.bias.abs())
        model.up.weight[5] = 0.1 * (model.up.weight[0] + model.up.weight[1])
        model.up.bias[5] = 0.1 * (model.up.bias[0] + model.up.bias[1])
    return model


def test_reconstruction_recovers_a_linearly_dependent_channel() -> None:
    model = _dependent_unit_model()
    with torch.no_grad():
        model.down.weight[:, 5] = 0.5
    x = torch.rand(64, 4)
    with torch.no_grad():
        reference = model(x)
    kwargs = dict(ratio=1 / 6, kinds=("channels",), importance="l2", calibration=[(x,)])
    plain = prunec.prune(model, (x,), **kwargs)
    rebuilt = prunec.prune(model, (x,), **kwargs, reconstruct=True)
    assert list(rebuilt.removed.values()) == [(5,)]
    with torch.no_grad():
        plain_error = max_abs_diff(reference, plain.module(x))
        rebuilt_error = max_abs_diff(reference, rebuilt.module(x))
    assert plain_error > 0.1
    assert rebuilt_error <= 0.3 * plain_error, "the refit recovers most of the removed unit's output"


def test_undamped_reconstruction_is_exact_for_a_dependent_channel() -> None:
    from prunec.passes.reconstruction import LeastSquaresReconstruction
    from prunec.passes.structured_removal import RemovalPlan, StructuredRemoval

    model = _dependent_unit_model()
    x = torch.rand(64, 4)
    with torch.no_grad():
        reference = model(x)
    analysis = prunec.analyze(model, (x,))
    group = next(g for g in analysis.prunable_groups if g.size == 6)
    stats = collect_input_stats(analysis.graph_module, [(x,)], covariance_for={"down.weight"})
    plan = {group.id: (5,)}
    assert LeastSquaresReconstruction(analysis, plan, stats, damping=1e-9)(analysis.graph_module).modified
    StructuredRemoval(analysis, RemovalPlan(plan))(analysis.graph_module)
    with torch.no_grad():
        # Exact up to the float32 resolution of the stored Gram matrix: the kept inputs and the
        # constant are linearly dependent here, so the equations are singular (min-norm fallback).
        assert max_abs_diff(reference, analysis.graph_module(x)) <= 2e-3


def test_explicit_widths() -> None:
    model, args, _ = ALL_CASES["llama_gqa"]()
    result = prunec.prune(model, args, widths={"channels": 40, "heads": 4})
    assert result.module.get_parameter("model.layers.1.mlp.up_proj.weight").shape == (40, 48)
    assert result.module.get_parameter("model.layers.1.self_attn.q_proj.weight").shape == (4 * 8, 48)
    hf = result.to_pretrained()
    assert hf.config.intermediate_size == 40 and hf.config.num_attention_heads == 4
    with pytest.raises(prunec.ConfigError, match="multiple of 2"):
        prunec.prune(model, args, widths={"heads": 3})


def test_obs_importance_prefers_a_unit_the_others_can_rebuild() -> None:
    torch.manual_seed(0)
    model = Wide().eval()
    with torch.no_grad():
        model.up.weight[5] = model.up.weight[0]  # unit 5 duplicates unit 0 (relu genuinely non-linear)
        model.up.bias[5] = model.up.bias[0]
        model.down.weight[:, 5] = 3.0  # and is the largest by magnitude
    x = torch.randn(256, 4)
    result = prunec.prune(model, (x,), ratio=1 / 6, kinds=("channels",), importance="obs",
                          calibration=[(x,)], reconstruct=True)
    assert list(result.removed.values()) in ([(0,)], [(5,)]), "one of the duplicates goes"
    with torch.no_grad():
        # Not exact: reconstruction is damped (1e-3 of the mean diagonal); outputs are O(5).
        assert max_abs_diff(model(x), result.module(x)) <= 0.05


@pytest.mark.slow
def test_recovery_distils_towards_the_original() -> None:
    from prunec.recovery import RecoveryConfig

    model, args, _ = ALL_CASES["llama_gqa"]()
    randomize_(model)
    calib = [(torch.randint(0, 96, args[0].shape, generator=torch.Generator().manual_seed(i)),) for i in range(4)]
    result = prunec.prune(model, args, ratio=0.5, kinds=("channels",), importance="l2", calibration=calib,
                          recover=RecoveryConfig(steps=30, lr=3e-3))
    losses = result.recovery_losses
    assert len(losses) == 30
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, f"distillation did not reduce the loss: {losses}"
    with pytest.raises(prunec.ConfigError, match="calibration"):
        prunec.prune(model, args, ratio=0.5, recover=RecoveryConfig())
