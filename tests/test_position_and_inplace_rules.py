"""Rules for position tables and in-place writes: complex rotary, 2-D rotary (meshgrid/tile), copy_.

They touch position tables (frozen: lengths fixed by ``arange``) and q/k head_dim (frozen by the
attention scale); attention heads, FFN widths and the residual width stay prunable, exactly.
"""

from __future__ import annotations

import torch

import prunec
from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.rules.complex import PAIR
from prunec.testing import check_dead_unit_exactness
from zoo.nets import ComplexRotaryDecoder, InplaceConcat, Rotary2DViT


def _prunable(analysis) -> set[tuple[str, int]]:
    return {(g.kind, g.size) for g in analysis.prunable_groups}


def test_complex_rotary_keeps_heads_prunable_and_freezes_the_complex_pair() -> None:
    model = randomize_(ComplexRotaryDecoder().eval())
    args = (torch.randn(2, 6, 6),)
    analysis = prunec.analyze(model, args)
    assert not analysis.unhandled_ops
    assert {("heads", 4), ("residual", 32), ("channels", 48)} <= _prunable(analysis)
    pair = [g for g in analysis.groups if g.size == 2 and PAIR in g.frozen]
    assert pair and all(g.label.endswith(("wq.weight[0]", "wk.weight[0]")) for g in pair)
    report = check_dead_unit_exactness(model, args, ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5
    removed = {analysis.groups[g].label: len(u) for g, u in report.expected_units.items()}
    heads, hidden = removed["layers.0.wq.weight[0]"], removed["inp.weight[0]"]
    assert heads and hidden
    # Whole heads go (8 rows each: 4 complex pairs), rotary tables untouched.
    assert report.result.module.get_parameter("layers.0.wq.weight").shape == (32 - 8 * heads, 32 - hidden)


def test_2d_rotary_tables_touch_only_positions_and_qk_head_dim() -> None:
    model = randomize_(Rotary2DViT().eval())
    args = (torch.randn(2, 3, 16, 16),)
    analysis = prunec.analyze(model, args)
    assert not analysis.unhandled_ops
    assert {("heads", 4), ("residual", 32), ("channels", 64)} <= _prunable(analysis)
    report = check_dead_unit_exactness(model, args, ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5


def test_meshgrid_couples_each_grid_dim_with_its_input() -> None:
    class Grid(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = torch.nn.Linear(3, 5), torch.nn.Linear(3, 7), torch.nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ga, gb = torch.meshgrid(self.a(x), self.b(x), indexing="xy")  # xy: shapes (7, 5)
            return self.c(ga * gb)

    analysis = prunec.analyze(Grid().eval(), (torch.randn(3),), keep_interface=False)
    assert not analysis.unhandled_ops
    groups = {(g.size, frozenset((m.name, m.dim) for m in g.members)) for g in analysis.prunable_groups}
    assert {(5, frozenset({("a.weight", 0), ("a.bias", 0), ("c.weight", 1)})),
            (7, frozenset({("b.weight", 0), ("b.bias", 0)}))} <= groups


def test_copy_into_slices_of_a_buffer_is_a_concat() -> None:
    model = randomize_(InplaceConcat().eval())
    args = (torch.randn(3, 6),)
    analysis = prunec.analyze(model, args)
    assert not analysis.unhandled_ops
    sizes = {g.label: g.size for g in analysis.prunable_groups}
    assert sizes == {"inp.weight[0]": 16, "a.weight[0]": 20, "b.weight[0]": 12}
    report = check_dead_unit_exactness(model, args, ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5
    assert report.result.module.get_parameter("out.weight").shape == (3, 14 + 8)
