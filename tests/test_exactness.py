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
