"""Allocation: how many (and which) units to remove from each prunable group."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from prunec.analysis.groups import Group
from prunec.errors import ConfigError

Allocator = Callable[[list[Group], Mapping[int, np.ndarray], float], dict[int, tuple[int, ...]]]

_ALLOCATORS: dict[str, Allocator] = {}


def register_allocation(name: str) -> Callable[[Allocator], Allocator]:
    """Decorator: register an allocation strategy under ``name``."""

    def deco(fn: Allocator) -> Allocator:
        _ALLOCATORS[name] = fn
        return fn

    return deco


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


@register_allocation("uniform")
def uniform(groups: list[Group], scores: Mapping[int, np.ndarray], ratio: float) -> dict[int, tuple[int, ...]]:
    """Remove the same fraction of units from every prunable group."""
    return {g.id: lowest_units(g, scores[g.id], uniform_count(g, ratio)) for g in groups}
