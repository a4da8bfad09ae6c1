"""The exactness oracle on many architectures.

Dead units (every weight they own or read is zero) are removed by magnitude
importance; the pruned model must compute the same outputs to 1e-5.  Ratio 0
must be the identity.
"""

from __future__ import annotations

import pytest
import torch

import prunec
from models import ALL_CASES, randomize_
from prunec.testing import check_dead_unit_exactness, max_abs_diff

# Cases whose every prunable kind is exercised; the tests below assert each reaches >= 10% removal.
CASES = sorted(ALL_CASES)


@pytest.mark.parametrize("name", CASES)
def test_dead_units_are_removed_exactly(name: str) -> None:
    model, args, kwargs = ALL_CASES[name]()
    randomize_(model)
    report = check_dead_unit_exactness(model, args, kwargs, ratio=0.3)
    result = report.result
    assert result.removed == report.expected_units, "magnitude importance must pick exactly the dead units"
    assert report.max_abs_diff <= 1e-5, f"pruned outputs differ by {report.max_abs_diff}"
    assert result.params_after <= 0.9 * result.params_before, (
        f"only {result.removed_fraction:.1%} of parameters removed")


@pytest.mark.parametrize("name", ["llama_gqa", "bert", "resnet", "c2f_chunk", "multihead_attention"])
def test_ratio_zero_is_identity(name: str) -> None:
    model, args, kwargs = ALL_CASES[name]()
    randomize_(model)
    with torch.no_grad():
        before = model(*args, **kwargs)
    result = prunec.prune(model, args, kwargs, ratio=0.0)
    with torch.no_grad():
        after = result.module(*args, **kwargs)
    assert result.params_after == result.params_before
    assert result.removed == {}
    # Not bit-identical: the traced graph may pick other kernels than eager mode (nn.MultiheadAttention's
    # fused fast path), so allow float rounding.
    assert max_abs_diff(before, after) <= 1e-6


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2", "bert", "vit", "resnet", "mobilenet_v2"])
def test_every_prunable_kind_is_found(name: str) -> None:
    model, args, kwargs = ALL_CASES[name]()
    analysis = prunec.analyze(model, args, kwargs)
    kinds = {g.kind for g in analysis.prunable_groups}
    expected = {
        "llama_gqa": {"channels", "heads", "residual"},
        "gpt2": {"channels", "heads", "residual"},
        "bert": {"channels", "heads"},  # hidden size reaches last_hidden_state: kept
        "vit": {"channels", "heads", "residual"},
        "resnet": {"channels", "residual"},
        "mobilenet_v2": {"channels", "residual"},
    }[name]
    assert expected <= kinds, f"missing kinds: {expected - kinds}"


def test_pruned_model_runs_on_other_inputs_of_the_same_shape() -> None:
    model, (ids,), kwargs = ALL_CASES["llama_gqa"]()
    randomize_(model)
    result = prunec.prune(model, (ids,), ratio=0.25)
    other = torch.randint(0, 96, ids.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = result.module(other)
    assert out.logits.shape == (ids.shape[0], ids.shape[1], 96)
    assert torch.isfinite(out.logits).all()


def test_group_norm_prunes_whole_groups_only() -> None:
    model, args, kwargs = ALL_CASES["group_norm"]()
    analysis = prunec.analyze(model, args, kwargs)
    gn = {g.size: g for g in analysis.groups if any(m.name == "gn.weight" for m in g.members)}
    assert set(gn) == {4}, "channels within a group are not a group of their own"
    whole_groups = gn[4]
    assert whole_groups.prunable
    # One unit = one GroupNorm group = 4 channels: conv filters + bias, GN weight + bias, conv2 inputs.
    assert whole_groups.params_per_unit == 4 * (3 * 9 + 1 + 2 + 8 * 9)


def test_ignore_freezes_the_named_module() -> None:
    model, args, kwargs = ALL_CASES["llama_gqa"]()
    result = prunec.prune(model, args, kwargs, ratio=0.3, kinds=("channels",), ignore=("model.layers.0.mlp",))
    assert result.module.get_parameter("model.layers.0.mlp.up_proj.weight").shape == (64, 48)
    assert result.module.get_parameter("model.layers.1.mlp.up_proj.weight").shape == (64 - round(0.3 * 64), 48)
    frozen = [g for g in result.analysis.groups if "ignored by the user" in g.frozen]
    assert frozen and all(any(m.name.startswith("model.layers.0.mlp.") for m in g.members) for g in frozen)
