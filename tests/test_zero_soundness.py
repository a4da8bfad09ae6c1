"""Removed units must stay zero where parameter-free statistics read them (prunec.analysis.zeros).

A term broadcast along a unit's axis (``x - x.mean(-1, keepdim=True)``, a token-mixing bias)
keeps a dead unit non-zero; a LayerNorm or a sum over that axis would then change when the unit
is removed.  Such axes are frozen with a reason; everything else stays prunable.
"""

from __future__ import annotations

import prunec
from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.testing import check_dead_unit_exactness
from random_models import Op, build
from zoo.nets import NET_ZOO

REASON = "broadcast term keeps removed units non-zero"


def _width_group(analysis, size: int):
    return [g for g in analysis.groups if g.size == size and any(m.name == "layers.0.weight" for m in g.members)]


def test_centering_before_a_norm_freezes_the_width() -> None:
    model, args = build(4, [Op("linear", (0, 8)), Op("center", (1,)), Op("norm", (2,))])
    (group,) = _width_group(prunec.analyze(model, args), 8)
    assert any(REASON in r for r in group.frozen), group.frozen


def test_centering_read_only_by_a_linear_layer_stays_prunable() -> None:
    model, args = build(4, [Op("linear", (0, 8)), Op("center", (1,)), Op("linear", (2, 6))])
    (group,) = _width_group(prunec.analyze(model, args), 8)
    assert group.prunable
    randomize_(model)
    report = check_dead_unit_exactness(model, args, ratio=0.34, kinds=KINDS)
    assert report.result.removed and report.max_abs_diff <= 1e-5


def test_per_token_gate_before_a_norm_stays_prunable() -> None:
    """``x * sigmoid(w.x)`` broadcasts a factor, not a term: dead units stay zero."""
    model, args = build(4, [Op("linear", (0, 8)), Op("gate", (1,)), Op("norm", (2,))])
    (group,) = _width_group(prunec.analyze(model, args), 8)
    assert group.prunable


def test_mlp_mixer_token_bias_freezes_the_residual_only() -> None:
    model, args, kwargs = NET_ZOO["mlp_mixer"]()
    analysis = prunec.analyze(model, args, kwargs)
    residual = [g for g in analysis.groups if any(m.name == "norm1.weight" for m in g.members)]
    assert residual and all(any(REASON in r for r in g.frozen) for g in residual)
    assert {g.size for g in analysis.prunable_groups} >= {16, 40}, "the token and channel MLPs stay prunable"
