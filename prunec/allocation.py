"""Allocation: how many (and which) units to remove from each prunable group.

``uniform`` removes the same fraction from every group; ``global`` standardises
scores within each group and removes the globally lowest units (so layers that
matter less give more); ``sensitivity`` measures each group's loss increase on
calibration data (:mod:`prunec.sensitivity`) and spends the budget where it hurts least.  Both honour GQA's even removal across KV groups and
never empty a group.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from prunec.analysis.groups import Group
from prunec.budget import normalise
from prunec.errors import ConfigError

# (groups, scores, ratio) -> removal plan
Allocator = Callable[[list[Group], Mapping[int, np.ndarray], float], dict[int, tuple[int, ...]]]

_ALLOCATORS: dict[str, Allocator] = {}
# What an allocation needs beyond scores ("calibration": it measures the model on calibration data).
_NEEDS: dict[str, tuple[str, ...]] = {}


def register_allocation(name: str, needs: tuple[str, ...] = ()) -> Callable[[Allocator], Allocator]:
    """Decorator: register an allocation strategy under ``name`` (with what it needs)."""

    def deco(fn: Allocator) -> Allocator:
        _ALLOCATORS[name] = fn
        _NEEDS[name] = needs
        return fn

    return deco


def allocation_needs(name: str) -> tuple[str, ...]:
    """What allocation ``name`` needs besides unit scores (validates the name)."""
    get_allocation(name)
    return _NEEDS[name]


def get_allocation(name: str) -> Allocator:
    try:
        return _ALLOCATORS[name]
    except KeyError:
        raise ConfigError(f"unknown allocation '{name}'; choose one of: {', '.join(sorted(_ALLOCATORS))}") from None


def lowest_units(group: Group, scores: np.ndarray, count: int) -> tuple[int, ...]:
    """The ``count`` lowest-scoring units; for GQA heads, ``count / blocks`` per KV group."""
    if count <= 0:
        return ()
    if group.blocks > 1:
        per_block = group.size // group.blocks
        take = count // group.blocks
        out: list[int] = []
        for b in range(group.blocks):
            block = scores[b * per_block : (b + 1) * per_block]
            order = np.argsort(block, kind="stable")[:take]
            out.extend(int(b * per_block + i) for i in order)
        return tuple(sorted(out))
    order = np.argsort(scores, kind="stable")[:count]
    return tuple(sorted(int(i) for i in order))


def uniform_count(group: Group, ratio: float) -> int:
    """``round(ratio * size)`` units, in whole KV-group multiples for GQA heads, never all of them."""
    if group.blocks > 1:
        per_block = group.size // group.blocks
        take = min(int(round(ratio * per_block)), per_block - 1)
        return take * group.blocks
    return min(int(round(ratio * group.size)), group.size - 1)


ROUNDED_KINDS = ("channels", "residual")


def round_kept(groups: list[Group], scores: Mapping[int, np.ndarray], removed: Mapping[int, tuple[int, ...]],
               multiple: int) -> dict[int, tuple[int, ...]]:
    """Adjust a removal plan so that every pruned channel/residual group keeps a multiple of ``multiple``
    units (the nearest one, at least ``multiple``, at most the group's size), lowest scores going first.

    Vectorised kernels (ONNX Runtime's NCHWc convolutions, SIMD GEMM tiles) run fastest on widths that
    are multiples of their vector width. Head groups and untouched groups are left as they are.
    """
    out = dict(removed)
    for g in groups:
        units = removed.get(g.id, ())
        if not units or multiple <= 1 or g.kind not in ROUNDED_KINDS or g.blocks > 1 or g.size <= multiple:
            continue
        keep = g.size - len(units)
        target = min(g.size, max(multiple, int(round(keep / multiple)) * multiple))
        out[g.id] = lowest_units(g, scores[g.id], g.size - target)
    return out


@register_allocation("uniform")
def uniform(groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float) -> dict[int, tuple[int, ...]]:
    """Remove the same fraction of units from every prunable group."""
    return {g.id: lowest_units(g, scores[g.id], uniform_count(g, ratio)) for g in groups}


def ranked_candidates(groups: list[Group], scores: Mapping[int, np.ndarray],
                      per_parameter: bool = False) -> list[tuple[int, tuple[int, ...]]]:
    """Every removable step ``(group, units)``, lowest score first.

    Scores are standardised within each group (FLAP), or with ``per_parameter``
    taken as they are and divided by the parameters a unit holds (a greedy
    knapsack: least estimated damage per parameter saved first).  A step is one
    unit, or for GQA heads one head from every KV group (the next lowest in each),
    so that any prefix of the list keeps removal even.
    """
    steps: list[tuple[float, int, tuple[int, ...]]] = []
    for g in groups:
        z = scores[g.id] / max(g.params_per_unit, 1) if per_parameter else normalise(scores[g.id])
        if g.blocks > 1:
            per_block = g.size // g.blocks
            orders = [np.argsort(z[b * per_block : (b + 1) * per_block], kind="stable") for b in range(g.blocks)]
            for k in range(per_block - 1):
                units = tuple(int(b * per_block + orders[b][k]) for b in range(g.blocks))
                steps.append((float(np.mean([z[u] for u in units])), g.id, units))
        else:
            for u in np.argsort(z, kind="stable")[: g.size - 1]:
                steps.append((float(z[u]), g.id, (int(u),)))
    steps.sort(key=lambda s: s[0])
    return [(gid, units) for _, gid, units in steps]


@register_allocation("knapsack")
def knapsack(groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float) -> dict[int, tuple[int, ...]]:
    """Rank all units by raw score per parameter and remove the lowest ``ratio`` of all units."""
    return _take_ratio(ranked_candidates(groups, scores, per_parameter=True), groups, ratio)


def _take_ratio(candidates: list[tuple[int, tuple[int, ...]]], groups: list[Group], ratio: float) -> dict[int, tuple[int, ...]]:
    total = sum(g.size for g in groups)
    plan: dict[int, list[int]] = {}
    removed = 0
    for gid, units in candidates:
        if removed >= ratio * total:
            break
        plan.setdefault(gid, []).extend(units)
        removed += len(units)
    return {g: tuple(sorted(u)) for g, u in plan.items()}


@register_allocation("global")
def global_(groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float) -> dict[int, tuple[int, ...]]:
    """Standardise scores per group, then remove the globally lowest ``ratio`` of all units."""
    return _take_ratio(ranked_candidates(groups, scores), groups, ratio)


@register_allocation("sensitivity", needs=("calibration",))
def sensitivity(groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float) -> dict[int, tuple[int, ...]]:
    """Measured per-group loss increase decides the widths; :func:`prunec.prune` builds the measuring
    :class:`prunec.sensitivity.SensitivityAllocator` (it needs the model and calibration batches)."""
    raise ConfigError("sensitivity allocation measures the model on calibration data; use prunec.prune(..., "
                      "allocation='sensitivity', calibration=...) or the CLI with --calib FILE")
