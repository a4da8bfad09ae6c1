"""Importance estimators: a score per unit of a group (low scores are removed first).

Estimators are registered by name; each is a function
``(analysis, group, tensors) -> np.ndarray`` of length ``group.size``.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from prunec.analysis.analyze import Analysis
from prunec.analysis.groups import Group
from prunec.errors import ConfigError

Estimator = Callable[[Analysis, Group, Mapping[str, torch.Tensor]], np.ndarray]

_ESTIMATORS: dict[str, Estimator] = {}


def register_importance(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator: register an importance estimator under ``name``."""

    def deco(fn: Estimator) -> Estimator:
        _ESTIMATORS[name] = fn
        return fn

    return deco


def get_importance(name: str) -> Estimator:
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise ConfigError(f"unknown importance '{name}'; choose one of: {', '.join(sorted(_ESTIMATORS))}") from None


def importance_names() -> list[str]:
    return sorted(_ESTIMATORS)


def _per_unit_sum(analysis: Analysis, group: Group, tensors: Mapping[str, torch.Tensor], fn) -> np.ndarray:
    """Sum ``fn(slice)`` over every non-shared member slice of each unit."""
    scores = np.zeros(group.size, dtype=np.float64)
    for m in group.members:
        if m.shared:
            continue
        t = tensors[m.name].detach()
        if t.device.type == "meta":
            raise ConfigError("magnitude importance needs real weights; the model is on the meta device")
        coords = analysis.unit_coords(group, m)
        per_pos = fn(t.float().movedim(m.dim, 0).reshape(t.shape[m.dim], -1)).double().cpu().numpy()
        valid = coords >= 0
        scores += np.bincount(coords[valid], weights=per_pos[valid], minlength=group.size)
    return scores


@register_importance("l1")
def l1(analysis: Analysis, group: Group, tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Sum of absolute weights of a unit over all member slices."""
    return _per_unit_sum(analysis, group, tensors, lambda rows: rows.abs().sum(dim=1))


@register_importance("l2")
def l2(analysis: Analysis, group: Group, tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Euclidean norm of a unit's weights over all member slices (the group L2 norm)."""
    return np.sqrt(_per_unit_sum(analysis, group, tensors, lambda rows: rows.pow(2).sum(dim=1)))


@register_importance("random")
def random(analysis: Analysis, group: Group, tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Uniform random scores (a baseline), seeded by the group id for reproducibility."""
    return np.random.default_rng(group.id).random(group.size)
