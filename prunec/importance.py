"""Importance estimators: a score per unit of a group (low scores are removed first).

Estimators are registered by name with what they need (weights only, calibration
activations, or gradients); each is a function ``(analysis, group, inputs) ->
np.ndarray`` of length ``group.size``.  Units whose weights are all zero score 0
under every estimator except ``random``, which keeps dead-unit removal exact.
"Weights" are a group's parameter members (``weight_members``): BatchNorm running
statistics and other buffers are state, not weights, and never raise a dead unit's score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from prunec.analysis.analyze import Analysis
from prunec.analysis.groups import Group, Member, weight_members
from prunec.errors import ConfigError
from prunec.stats import CalibrationStats


@dataclass
class ScoringInputs:
    """What estimators may read: the weights, calibration statistics, accumulated gradients."""

    tensors: Mapping[str, torch.Tensor]
    stats: CalibrationStats | None = None
    grads: Mapping[str, torch.Tensor] = field(default_factory=dict)


Estimator = Callable[[Analysis, Group, ScoringInputs], np.ndarray]


@dataclass(frozen=True)
class EstimatorInfo:
    name: str
    fn: Estimator
    needs: tuple[str, ...]  # "activations", "gradients"
    doc: str


_ESTIMATORS: dict[str, EstimatorInfo] = {}


def register_importance(name: str, needs: tuple[str, ...] = ()) -> Callable[[Estimator], Estimator]:
    """Decorator: register an importance estimator under ``name``, with what it needs."""

    def deco(fn: Estimator) -> Estimator:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _ESTIMATORS[name] = EstimatorInfo(name, fn, needs, doc)
        return fn

    return deco


def get_importance(name: str) -> EstimatorInfo:
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise ConfigError(f"unknown importance '{name}'; choose one of: {', '.join(sorted(_ESTIMATORS))}") from None


def importance_names() -> list[str]:
    return sorted(_ESTIMATORS)


def _rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    if t.device.type == "meta":
        raise ConfigError("importance scores need real weights; the model is on the meta device")
    return t.detach().float().movedim(dim, 0).reshape(t.shape[dim], -1)


def _scatter(analysis: Analysis, group: Group, m: Member, per_position: torch.Tensor, out: np.ndarray) -> None:
    coords = analysis.unit_coords(group, m)
    valid = coords >= 0
    out += np.bincount(coords[valid], weights=per_position.double().cpu().numpy()[valid], minlength=group.size)


def _per_unit_sum(analysis: Analysis, group: Group, tensors: Mapping[str, torch.Tensor], fn) -> np.ndarray:
    """Sum ``fn(rows)`` over the weight slices of each unit (not statistics: see ``weight_members``)."""
    scores = np.zeros(group.size, dtype=np.float64)
    for m in weight_members(group.members):
        _scatter(analysis, group, m, fn(_rows(tensors[m.name], m.dim)), scores)
    return scores


@register_importance("l1")
def l1(analysis: Analysis, group: Group, inputs: ScoringInputs) -> np.ndarray:
    """Sum of absolute weights of a unit over all member slices."""
    return _per_unit_sum(analysis, group, inputs.tensors, lambda rows: rows.abs().sum(dim=1))


@register_importance("l2")
def l2(analysis: Analysis, group: Group, inputs: ScoringInputs) -> np.ndarray:
    """Euclidean norm of a unit's weights over all member slices (the group L2 norm)."""
    return np.sqrt(_per_unit_sum(analysis, group, inputs.tensors, lambda rows: rows.pow(2).sum(dim=1)))


@register_importance("random")
def random(analysis: Analysis, group: Group, inputs: ScoringInputs) -> np.ndarray:
    """Uniform random scores (a baseline), seeded by the group id for reproducibility."""
    return np.random.default_rng(group.id).random(group.size)


def _reader_members(group: Group, stats: CalibrationStats) -> list[Member]:
    """Members that are the input dimension of a layer whose input statistics were collected."""
    return [m for m in group.members if not m.shared and m.dim == 1 and m.name in stats.inputs]


def _activation_scores(analysis: Analysis, group: Group, inputs: ScoringInputs, per_channel) -> np.ndarray:
    if inputs.stats is None:
        raise ConfigError("this importance needs calibration data (--calib FILE)")
    scores = np.zeros(group.size, dtype=np.float64)
    readers = _reader_members(group, inputs.stats)
    if not readers:
        # No layer reads this group's units with recorded inputs: fall back to magnitude.
        return l1(analysis, group, inputs)
    for m in readers:
        rows = _rows(inputs.tensors[m.name], m.dim)
        _scatter(analysis, group, m, per_channel(rows, inputs.stats.inputs[m.name]), scores)
    return scores


@register_importance("activation", needs=("activations",))
def activation(analysis: Analysis, group: Group, inputs: ScoringInputs) -> np.ndarray:
    """Wanda-sp: sum over the reading layers of |W[:, j]| times the input norm ||X_j||."""
    return _activation_scores(analysis, group, inputs, lambda rows, st: rows.abs().sum(1).double() * st.norm)


@register_importance("fluctuation", needs=("activations",))
def fluctuation(analysis: Analysis, group: Group, inputs: ScoringInputs) -> np.ndarray:
    """FLAP: input variance Var(X_j) times ||W[:, j]||^2 over the reading layers."""
    return _activation_scores(analysis, group, inputs, lambda rows, st: rows.pow(2).sum(1).double() * st.variance)


@register_importance("taylor", needs=("gradients",))
def taylor(analysis: Analysis, group: Group, inputs: ScoringInputs) -> np.ndarray:
    """First-order Taylor: sum of |w * dL/dw| over a unit's member slices (gradients over calibration)."""
    if not inputs.grads:
        raise ConfigError("taylor importance needs calibration data (--calib FILE)")
    scores = np.zeros(group.size, dtype=np.float64)
    for m in weight_members(group.members):
        if m.name not in inputs.grads:
            continue
        w = _rows(inputs.tensors[m.name], m.dim)
        g = _rows(inputs.grads[m.name], m.dim)
        _scatter(analysis, group, m, (w * g).abs().sum(1), scores)
    return scores


@register_importance("obs", needs=("activations", "gram"))
def obs(analysis: Analysis, group: Group, inputs: ScoringInputs) -> np.ndarray:
    """Structured Optimal Brain Surgeon: output error of removing a unit's input columns of each
    reading layer *after* the optimal least-squares update of the other columns,
    sum_rows w_P^T (H^-1_PP)^-1 w_P with H the input second moment (pairs with --reconstruct)."""
    if inputs.stats is None:
        raise ConfigError("this importance needs calibration data (--calib FILE)")
    readers = [m for m in _reader_members(group, inputs.stats) if m.name in inputs.stats.gram]
    if not readers:
        return _activation_scores(analysis, group, inputs, lambda rows, st: rows.pow(2).sum(1).double() * st.squares)
    scores = np.zeros(group.size, dtype=np.float64)
    for m in readers:
        st = inputs.stats.inputs[m.name]
        h = inputs.stats.gram[m.name].double() / max(st.count, 1)  # stored in float32
        h = h + 1e-3 * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
        h_inv = torch.linalg.inv(h)
        w = _rows(inputs.tensors[m.name], m.dim).double()  # (in positions, out)
        coords = analysis.unit_coords(group, m)
        valid = coords >= 0
        if len(np.unique(coords[valid])) == valid.sum():
            # One position per unit (FFN neurons): the classic ||w_j||^2 / [H^-1]_jj.
            per_pos = (w.pow(2).sum(1) / torch.diagonal(h_inv)).cpu().numpy()
            scores += np.bincount(coords[valid], weights=per_pos[valid], minlength=group.size)
            continue
        for unit in np.unique(coords[valid]):
            pos = torch.as_tensor(np.flatnonzero(coords == unit), dtype=torch.long)
            block = h_inv[pos][:, pos]
            wp = w[pos]  # (|P|, out)
            scores[unit] += float(torch.einsum("po,pq,qo->", wp, torch.linalg.inv(block), wp))
    return scores
