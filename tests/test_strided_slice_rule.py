"""Strided slices (``x[..., start::step]``): interleaved fused projections prune exactly, in whole strides."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

import prunec
from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.testing import check_dead_unit_exactness
from zoo.nets import GptOssMoE


class InterleavedGLU(nn.Module):
    """One projection whose even columns are the gate and odd columns the up (gpt-oss's layout)."""

    def __init__(self, step: int = 2) -> None:
        super().__init__()
        self.step = step
        self.gate_up = nn.Linear(6, step * 10)
        self.down = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate_up(x)
        parts = [h[..., k::self.step] for k in range(self.step)]
        y = torch.sigmoid(parts[0]) * parts[0]
        for p in parts[1:]:
            y = y * (p + 1)
        return self.down(y)


def _group(analysis, name: str, dim: int):
    [g] = [g for g in analysis.groups if any(m.name == name and m.dim == dim for m in g.members) and not g.frozen]
    return g


def test_interleaved_gate_up_is_one_group_whose_units_are_column_pairs() -> None:
    model = randomize_(InterleavedGLU().eval())
    args = (torch.randn(2, 5, 6),)
    analysis = prunec.analyze(model, args)
    assert not analysis.unhandled_ops
    g = _group(analysis, "gate_up.weight", 0)
    assert g.size == 10 and {(m.name, m.dim) for m in g.members} == {
        ("gate_up.weight", 0), ("gate_up.bias", 0), ("down.weight", 1)}
    member = next(m for m in g.members if m.name == "gate_up.weight")
    # Unit u owns columns 2u (gate) and 2u + 1 (up).
    assert analysis.unit_coords(g, member).tolist() == [u for u in range(10) for _ in range(2)]
    # The position within the stride is frozen with its reason.
    assert any("within the stride" in r for grp in analysis.groups for r in grp.frozen)


def test_removal_takes_whole_strides_and_the_slices_still_pick_gate_and_up() -> None:
    model = randomize_(InterleavedGLU().eval())
    args = (torch.randn(2, 5, 6),)
    original = model.gate_up.weight.detach().clone()
    report = check_dead_unit_exactness(model, args, ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5
    [(gid, dead)] = report.expected_units.items()
    kept = [u for u in range(10) if u not in dead]
    pruned = report.result.module.get_parameter("gate_up.weight")
    assert pruned.shape == (14, 6)
    rows = np.array([[2 * u, 2 * u + 1] for u in kept]).ravel()
    assert torch.equal(pruned, original[rows])


def test_three_way_interleave_prunes_exactly() -> None:
    model = randomize_(InterleavedGLU(step=3).eval())
    report = check_dead_unit_exactness(model, (torch.randn(2, 5, 6),), ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5
    assert report.result.module.get_parameter("gate_up.weight").shape == (21, 6)


class OddStride(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 9)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(x)[..., ::2])  # positions 0, 2, .., 8 do not tile 9 columns in pairs


def test_a_stride_that_does_not_tile_the_dim_freezes_with_a_reason() -> None:
    analysis = prunec.analyze(OddStride().eval(), (torch.randn(2, 6),))
    [g] = [g for g in analysis.groups if g.label == "fc.weight[0]"]
    assert g.frozen and any("does not tile" in r for r in g.frozen)


class StrideAndChunk(nn.Module):
    """The same fused width read both interleaved and in contiguous halves."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 16)
        self.a = nn.Linear(8, 3)
        self.b = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x))
        lo, hi = h.chunk(2, -1)
        return self.a(h[..., ::2]) + self.b(lo + hi)


def test_stride_combined_with_a_chunk_stays_exact() -> None:
    model = randomize_(StrideAndChunk().eval())
    args = (torch.randn(2, 6),)
    report = check_dead_unit_exactness(model, args, ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5
    # 16 = (halves 2) x (4 pairs) x (stride 2) -- lo + hi ties the halves, so a unit is 4 columns.
    g = _group(report.result.analysis, "fc.weight", 0)
    assert g.size == 4


class MoEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.moe = GptOssMoE(hidden=16, inter=12)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.moe(h))


def test_gpt_oss_experts_prune_in_gate_up_pairs_and_the_router_keeps_the_hidden_width() -> None:
    model = randomize_(MoEBlock().eval())
    args = (torch.randn(2, 5, 6),)
    analysis = prunec.analyze(model, args)
    assert not analysis.unhandled_ops
    g = _group(analysis, "moe.experts.gate_up_proj", 2)
    assert g.size == 12 and {m.name for m in g.members} == {
        "moe.experts.gate_up_proj", "moe.experts.gate_up_proj_bias", "moe.experts.down_proj"}
    # topk / histc / cumsum / scatter_ touch only tokens and experts: the hidden width stays prunable.
    hidden = _group(analysis, "moe.router.weight", 1)
    assert ("moe.experts.gate_up_proj", 1) in {(m.name, m.dim) for m in hidden.members}
    report = check_dead_unit_exactness(model, args, ratio=0.25, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5
    assert report.result.module.get_parameter("moe.experts.gate_up_proj").shape == (4, 12, 18)
