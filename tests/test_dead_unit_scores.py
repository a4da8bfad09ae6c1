"""Dead units score 0 under every estimator, whatever the BatchNorm statistics say.

A conv channel whose filter, BatchNorm gamma and beta are zero is dead for any running
mean and variance (the norm's output is ``0 * (x - mean) / std + 0``).  Statistics are
state, not weights, so no estimator may read them: with trained (non-unit) statistics a
magnitude score that summed ``running_var`` kept dead channels and removed live ones.
The nets here are the three conv structures where that was seen: a ResNet-style
bottleneck, a MobileNetV2-style inverted residual and a two-branch concat.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import prunec
from models import randomize_
from prunec.attrs import get_path
from prunec.importance import ScoringInputs
from prunec.prune import score_groups
from prunec.stats import collect_input_stats
from prunec.testing import choose_dead_units, kill_units, max_abs_diff


def _cbr(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class Bottleneck(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 8, 3)
        self.reduce, self.conv, self.expand = _cbr(8, 6), _cbr(6, 6, 3), nn.Conv2d(6, 8, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.bn(self.expand(self.conv(self.reduce(x)))))
        return self.head(x.mean((2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 8, 3)
        self.expand, self.depthwise = _cbr(8, 24), _cbr(24, 24, 3, groups=24)
        self.project, self.bn = nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.bn(self.project(self.depthwise(self.expand(x))))
        return self.head(x.mean((2, 3)))


class TwoBranchConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = _cbr(3, 6, 3), _cbr(3, 10, 1)
        self.fuse = _cbr(16, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))
        return self.head(x.mean((2, 3)))


NETS = {"bottleneck": Bottleneck, "inverted_residual": InvertedResidual, "two_branch_concat": TwoBranchConcat}
ESTIMATORS = ["l1", "l2", "activation", "fluctuation", "obs"]


def _images(seed: int) -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(seed))


def _dead_net(name: str):
    model = randomize_(NETS[name]().eval())
    args = (_images(0),)
    analysis = prunec.analyze(model, args)
    units = choose_dead_units(analysis, 0.3, ("channels",))
    kill_units(model, analysis, units)
    return model, args, analysis, units


@pytest.mark.parametrize("name", sorted(NETS))
def test_dead_channels_keep_random_batchnorm_statistics(name) -> None:
    """The oracle kills weights only: the statistics of a dead channel stay those of a trained net."""
    model, _, analysis, units = _dead_net(name)
    checked = 0
    for gid, chosen in units.items():
        for m in analysis.groups[gid].members:
            if m.name.endswith("running_var"):
                var = get_path(model, m.name)
                assert (var[list(chosen)] >= 0.5).all(), "running variance of a dead channel was changed"
                checked += 1
    assert checked, "the net has no BatchNorm member in a pruned group"


@pytest.mark.parametrize("importance", ESTIMATORS)
@pytest.mark.parametrize("name", sorted(NETS))
def test_dead_channels_score_exactly_zero(name, importance) -> None:
    model, args, analysis, units = _dead_net(name)
    gm = analysis.graph_module
    inputs = ScoringInputs({n: get_path(gm, n) for n in analysis.slots})
    if importance not in ("l1", "l2"):
        readers = {m.name for g in analysis.groups for m in g.members if m.dim == 1 and not m.shared}
        inputs.stats = collect_input_stats(gm, _calibration(args), covariance_for=readers)
    scores = score_groups(analysis, [analysis.groups[g] for g in units], importance, inputs)
    for gid, chosen in units.items():
        assert (scores[gid][list(chosen)] == 0).all(), f"{importance} scores a dead channel of group {gid}"
        assert (np.delete(scores[gid], chosen) >= 0).all()


@pytest.mark.parametrize("importance", [e for e in ESTIMATORS if e != "fluctuation"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_pruning_dead_channels_is_exact(name, importance) -> None:
    """Magnitude removes exactly the dead channels.  Calibration scores may tie a live channel whose
    activations are all zero on the calibration data (a ReLU that never fires) with a dead one; the
    example batch is part of the calibration data, so removing such a channel is exact on it too.
    (Fluctuation also scores a *constant* live channel 0 — FLAP's premise, repaired by bias compensation
    where the reader has a bias — so only its zero scores are checked, above.)"""
    model, args, _, units = _dead_net(name)
    with torch.no_grad():
        reference = model(*args)
    calibration = _calibration(args) if importance not in ("l1", "l2") else None
    result = prunec.prune(model, args, ratio=0.3, kinds=("channels",), importance=importance,
                          calibration=calibration)
    if calibration is None:
        assert result.removed == units, f"{importance} kept a dead channel and removed a live one"
    with torch.no_grad():
        assert max_abs_diff(reference, result.module(*args)) <= 1e-5


def _calibration(args: tuple) -> list[tuple]:
    return [args] + [(_images(i),) for i in range(1, 4)]
