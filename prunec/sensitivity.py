"""Sensitivity allocation: measure how much each group's removal hurts, spend the budget where it hurts least.

For every prunable group and each of a few removal fractions, the lowest-scoring
units of that group alone are zeroed (every weight slice of the unit: the dead
unit the removal pass deletes exactly, so this is the pruned model's function
without any refit) and the distortion of the outputs on calibration batches is
measured (KL divergence from the unpruned next-token distributions for language
models: unlike the loss itself it cannot improve by chance).  The resulting
curves ``distortion(fraction)`` drive a greedy allocation: repeatedly
take the next step (one more fraction level of one group) with the smallest
distortion increase per parameter it saves, until the requested share of units is removed.

Cost: groups × levels × batches forward passes on the calibration data.
"""

from __future__ import annotations

import heapq
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prunec.allocation import lowest_units, uniform_count
from prunec.analysis.analyze import Analysis
from prunec.analysis.groups import Group
from prunec.attrs import get_path
from prunec.errors import ConfigError
from prunec.evaluate import logits_of


@dataclass(frozen=True)
class SensitivityConfig:
    """Removal fractions probed per group and how many calibration batches each probe uses."""

    levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    batches: int = 2


def output_distortion(module: torch.nn.Module, batches: Sequence[tuple], reference: Sequence[torch.Tensor],
                      kwargs: Mapping[str, Any] | None = None, language_model: bool = True) -> float:
    """How far ``module``'s outputs are from ``reference`` (the unpruned outputs on the same batches):
    for language models the KL divergence of next-token distributions per token, otherwise the mean
    squared distance relative to the reference's mean square.  Zero for the unpruned model."""
    total = 0.0
    with torch.no_grad():
        for batch, ref in zip(batches, reference):
            y = _first_tensor(module(*batch, **dict(kwargs or {}))).float()
            if language_model:
                target = F.log_softmax(ref, dim=-1)
                total += float((target.exp() * (target - F.log_softmax(y, dim=-1))).sum(-1).mean())
            else:
                total += float((y - ref).pow(2).mean() / ref.pow(2).mean().clamp_min(1e-12))
    return total / max(len(batches), 1)


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError("sensitivity allocation needs a model whose output is (or starts with) a tensor")


def _is_language_model(module: torch.nn.Module, batch: tuple, kwargs: Mapping[str, Any] | None) -> bool:
    if not batch or batch[0].is_floating_point():
        return False
    try:
        logits = logits_of(module(*batch, **dict(kwargs or {})))
    except ConfigError:
        return False
    return logits.dim() == 3 and logits.shape[:2] == batch[0].shape[:2]


@contextmanager
def zeroed_units(module: torch.nn.Module, analysis: Analysis, group: Group, units: Sequence[int]) -> Iterator[None]:
    """Temporarily zero every (non-shared) weight slice of ``units``: the function of removing them."""
    saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []
    chosen = np.asarray(sorted(units), dtype=np.int64)
    try:
        with torch.no_grad():
            for m in group.members:
                if m.shared or m.role == "constant":
                    continue
                tensor = get_path(module, m.name)
                coords = analysis.unit_coords(group, m)
                positions = torch.as_tensor(np.flatnonzero(np.isin(coords, chosen)), dtype=torch.long)
                if positions.numel() == 0:
                    continue
                view = tensor.movedim(m.dim, 0)
                saved.append((tensor, m.dim, positions, view[positions].clone()))
                view[positions] = 0
        yield
    finally:
        with torch.no_grad():
            # Reversed: a tensor that is a member twice gets its original values back last.
            for tensor, dim, positions, values in reversed(saved):
                tensor.movedim(dim, 0)[positions] = values


def measure_sensitivity(module: torch.nn.Module, analysis: Analysis, groups: Sequence[Group],
                        scores: Mapping[int, np.ndarray], batches: Sequence[tuple],
                        kwargs: Mapping[str, Any] | None = None,
                        config: SensitivityConfig = SensitivityConfig()) -> dict[int, np.ndarray]:
    """Output distortion (:func:`output_distortion`) of removing each group's lowest-scoring units alone,
    at each of ``config.levels``."""
    if not batches:
        raise ConfigError("sensitivity allocation needs calibration data (--calib FILE)")
    probe = list(batches[: config.batches])
    language_model = _is_language_model(module, probe[0], kwargs)
    with torch.no_grad():
        reference = [_first_tensor(module(*b, **dict(kwargs or {}))).float() for b in probe]
    curves: dict[int, np.ndarray] = {}
    for g in groups:
        curve = []
        for level in config.levels:
            units = lowest_units(g, scores[g.id], uniform_count(g, level))
            with zeroed_units(module, analysis, g, units):
                curve.append(output_distortion(module, probe, reference, kwargs, language_model))
        curves[g.id] = np.asarray(curve)
    return curves


class SensitivityAllocator:
    """An allocator (``(groups, scores, ratio) -> plan``) over measured sensitivity curves.

    ``ratio`` is the share of the groups' parameters to remove (as for the other
    allocators, a budget is met by searching over it).  Each group moves up its
    measured levels in order; the step with the least loss increase per parameter
    saved goes first.  A group never goes beyond its last measured level.
    """

    def __init__(self, curves: Mapping[int, np.ndarray], levels: Sequence[float]) -> None:
        self.curves = dict(curves)
        self.levels = tuple(levels)

    def __call__(self, groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float) -> dict[int, tuple[int, ...]]:
        counts: dict[int, list[int]] = {}
        losses: dict[int, list[float]] = {}
        for g in groups:
            # Levels that round to the same unit count (coarse groups: GQA heads) are one step.
            counts[g.id], losses[g.id] = [0], [0.0]
            for level, loss in zip(self.levels, np.maximum.accumulate(self.curves[g.id])):
                count = uniform_count(g, level)
                if count > counts[g.id][-1]:
                    counts[g.id].append(count)
                    losses[g.id].append(float(loss))
        by_id = {g.id: g for g in groups}
        total = sum(g.size * max(g.params_per_unit, 1) for g in groups)
        target = ratio * total
        level = {g.id: 0 for g in groups}
        heap: list[tuple[float, int]] = []

        def push(gid: int) -> None:
            k = level[gid]
            if k + 1 < len(counts[gid]):
                saved = (counts[gid][k + 1] - counts[gid][k]) * max(by_id[gid].params_per_unit, 1)
                heapq.heappush(heap, ((losses[gid][k + 1] - losses[gid][k]) / saved, gid))

        for g in groups:
            push(g.id)
        removed = 0.0
        while heap and removed < target:
            _, gid = heapq.heappop(heap)
            k = level[gid]
            removed += (counts[gid][k + 1] - counts[gid][k]) * max(by_id[gid].params_per_unit, 1)
            level[gid] = k + 1
            push(gid)
        return {g.id: lowest_units(g, scores[g.id], counts[g.id][level[g.id]]) for g in groups}
