"""The einsum rule: subscripts couple dims; unsupported equations freeze instead of failing."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import prunec
from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.rules.einsum import parse_equation
from prunec.testing import check_dead_unit_exactness


def test_parse_equation() -> None:
    assert parse_equation("bnhd,bmhd->bhnm", 2) == (["bnhd", "bmhd"], "bhnm")
    assert parse_equation("ij,jk", 2) == (["ij", "jk"], "ik")
    with pytest.raises(ValueError):
        parse_equation("...ij,jk->...ik", 2)
    with pytest.raises(ValueError):
        parse_equation("ii->i", 1)


class EinsumMLP(nn.Module):
    """A bilinear-free MLP whose matmuls are einsums against weights."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(6, 20))
        self.w2 = nn.Parameter(torch.randn(20, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bsh,ho->bso", torch.relu(torch.einsum("bsi,ih->bsh", x, self.w1)), self.w2)


def test_einsum_against_weights_prunes_the_hidden_width_exactly() -> None:
    model = randomize_(EinsumMLP().eval())
    args = (torch.randn(2, 4, 6),)
    analysis = prunec.analyze(model, args)
    assert [(g.kind, g.size) for g in analysis.prunable_groups] == [("channels", 20)]
    report = check_dead_unit_exactness(model, args, ratio=0.3, kinds=KINDS)
    assert report.max_abs_diff <= 1e-5 and model.w1.shape == (6, 20)
    assert report.result.module.get_parameter("w1").shape == (6, 14)


class Diagonal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bii->bi", self.fc(x).view(2, 4, 4).expand(2, 4, 4))


def test_unsupported_equation_freezes_with_a_reason() -> None:
    analysis = prunec.analyze(Diagonal().eval(), (torch.randn(8, 4),))
    assert any("einsum" in reason for _, reason in analysis.unhandled_ops)
