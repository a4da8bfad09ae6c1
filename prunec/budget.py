"""Budgets: how much to remove, as a per-group ratio, a parameter budget or a FLOPs budget.

``params=0.8`` keeps 80% of the non-embedding parameters; ``flops=0.7`` keeps 70%
of the FLOPs of one forward pass on the example inputs.  Parameter counts of a
candidate plan are exact (computed from the layouts, without slicing anything).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from math import prod
from typing import Callable

import numpy as np
import torch

from prunec.analysis.analyze import Analysis
from prunec.analysis.axes import kept_positions
from prunec.errors import ConfigError

aten = torch.ops.aten


@dataclass(frozen=True)
class Budget:
    """What to keep: ``metric`` is "params" or "flops", ``keep`` a fraction in (0, 1]."""

    metric: str
    keep: float

    @staticmethod
    def parse(text: str) -> "Budget":
        metric, sep, value = text.partition("=")
        try:
            keep = float(value)
        except ValueError:
            keep = -1.0
        if not sep or metric not in ("params", "flops") or not 0.0 < keep <= 1.0:
            raise ConfigError(f"budget '{text}' is not METRIC=FRACTION with METRIC params or flops and FRACTION in "
                              "(0, 1]; e.g. --budget params=0.8 keeps 80% of the non-embedding parameters")
        return Budget(metric, keep)


def embedding_weights(analysis: Analysis) -> set[str]:
    """Names of tensors read by an embedding lookup (their tied aliases included)."""
    names: set[str] = set()
    for node in analysis.graph_module.graph.nodes:
        if node.op == "call_function" and getattr(node.target, "overloadpacket", None) is aten.embedding:
            w = node.args[0]
            if w.op == "get_attr":
                names.add(str(w.target))
    return names


class ParamCounter:
    """Exact parameter counts of removal plans, from layouts (nothing is sliced)."""

    def __init__(self, analysis: Analysis, exclude_embeddings: bool = True) -> None:
        self.analysis = analysis
        skip = embedding_weights(analysis) if exclude_embeddings else set()
        self.slots = [s for s in analysis.slots.values() if s.role == "parameter" and s.name not in skip]

    @functools.cached_property
    def full(self) -> int:
        """Parameters before any removal."""
        return self.count({})

    def count(self, plan: dict[int, tuple[int, ...]]) -> int:
        from prunec.passes.structured_removal import RemovalPlan, plan_masks

        kept_1d, kept_pairs = plan_masks(self.analysis, RemovalPlan(plan))
        table = self.analysis.table
        touched = set(kept_1d) | {a for pair in kept_pairs for a in pair}
        total = 0
        for slot in self.slots:
            sizes = []
            for i, d in enumerate(slot.dims):
                if touched.isdisjoint(table.atoms(d)):
                    sizes.append(slot.shape[i])
                else:
                    sizes.append(len(kept_positions(table, d, kept_1d, kept_pairs)))
            total += prod(sizes)
        return total


def solve_ratio(plan_for_ratio: Callable[[float], dict[int, tuple[int, ...]]], counter: ParamCounter,
                keep: float, steps: int = 24) -> tuple[float, dict[int, tuple[int, ...]]]:
    """The per-group ratio whose plan keeps closest to (and not below) ``keep`` of the parameters."""
    target = keep * counter.full
    lo, hi = 0.0, 0.99
    best = (0.0, {})
    for _ in range(steps):
        mid = (lo + hi) / 2
        plan = plan_for_ratio(mid)
        if counter.count(plan) >= target:
            best = (mid, plan)
            lo = mid
        else:
            hi = mid
    return best


def solve_prefix(candidates: list[tuple[int, tuple[int, ...]]], counter: ParamCounter, keep: float) -> dict[int, tuple[int, ...]]:
    """Longest prefix of ranked removal candidates ``(group, units)`` that keeps ``keep`` of the parameters."""
    target = keep * counter.full

    def plan_of(k: int) -> dict[int, tuple[int, ...]]:
        plan: dict[int, list[int]] = {}
        for gid, units in candidates[:k]:
            plan.setdefault(gid, []).extend(units)
        return {g: tuple(sorted(u)) for g, u in plan.items()}

    lo, hi = 0, len(candidates)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter.count(plan_of(mid)) >= target:
            lo = mid
        else:
            hi = mid - 1
    return plan_of(lo)


def normalise(scores: np.ndarray) -> np.ndarray:
    """Standardise scores within a group (FLAP), so groups of different scales rank together."""
    std = scores.std()
    return (scores - scores.mean()) / (std if std > 0 else 1.0)
