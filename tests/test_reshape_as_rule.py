"""The reshape_as rule: LeViT's Linear + BatchNorm1d (norm on flattened tokens, reshaped back) prunes exactly."""

from __future__ import annotations

import torch
import torch.nn as nn

import prunec
from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.testing import check_dead_unit_exactness


class LinearBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 20, bias=False)
        self.bn = nn.BatchNorm1d(20)
        self.down = nn.Linear(20, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        h = self.bn(h.flatten(0, 1)).reshape_as(h)
        return self.down(torch.relu(h))


def test_reshape_as_couples_the_norm_with_the_linear_and_prunes_exactly() -> None:
    model = randomize_(LinearBN().eval())
    args = (torch.randn(2, 5, 6),)
    analysis = prunec.analyze(model, args)
    assert not analysis.unhandled_ops
    [group] = analysis.prunable_groups
    assert group.size == 20
    assert {(m.name, m.dim) for m in group.members} >= {("up.weight", 0), ("bn.weight", 0), ("down.weight", 1)}
    report = check_dead_unit_exactness(model, args, ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5
    assert report.result.module.get_parameter("up.weight").shape == (14, 6)
