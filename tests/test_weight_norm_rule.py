"""The weight_norm rule: ``w = g * v / ||v||`` prunes v's and g's units together, exactly."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import weight_norm

import prunec
from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.passes.structured_removal import RemovalPlan, StructuredRemoval
from prunec.testing import choose_dead_units, max_abs_diff


class WeightNormConvs(nn.Module):
    """HiFi-GAN-style weight-normed Conv1d stack (weight_norm over the output channels, dim 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = weight_norm(nn.Conv1d(4, 16, 3, padding=1))
        self.b = weight_norm(nn.Conv1d(16, 12, 3, padding=1))
        self.c = nn.Conv1d(12, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.nn.functional.leaky_relu(self.b(torch.nn.functional.leaky_relu(self.a(x), 0.1)), 0.1))


def test_magnitude_and_direction_share_the_output_unit() -> None:
    analysis = prunec.analyze(WeightNormConvs().eval(), (torch.randn(2, 4, 10),))
    assert not analysis.unhandled_ops
    groups = {(g.size, frozenset((m.name, m.dim) for m in g.members)) for g in analysis.prunable_groups}
    assert (16, frozenset({("a.parametrizations.weight.original0", 0), ("a.parametrizations.weight.original1", 0),
                           ("a.bias", 0), ("b.parametrizations.weight.original1", 1)})) in groups


@torch.no_grad()
def test_removing_dead_units_is_exact() -> None:
    """A weight-normed unit is dead when its magnitude g is zero (v = 0 would be 0/0): kill and remove those."""
    model = randomize_(WeightNormConvs().eval())
    x = torch.randn(2, 4, 10)
    analysis = prunec.analyze(model, (x,))
    units = choose_dead_units(analysis, 0.3, KINDS)
    assert units
    for gid, chosen in units.items():
        group = analysis.groups[gid]
        for m in group.members:
            coords = analysis.unit_coords(group, m)
            idx = torch.as_tensor([i for i, c in enumerate(coords) if c in chosen])
            t = analysis.graph_module.get_parameter(m.name)
            if m.name.endswith("original1") and m.dim == 0:
                continue  # v keeps its direction: g = 0 already makes w's row zero
            t.index_fill_(m.dim, idx, 0.0)
    gm = analysis.graph_module
    reference = gm(x)
    StructuredRemoval(analysis, RemovalPlan(units))(gm)
    assert max_abs_diff(reference, gm(x)) <= 1e-5
    assert gm.get_parameter("a.parametrizations.weight.original1").shape[0] < 16
