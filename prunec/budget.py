"""Budgets: how much to remove, as a per-group ratio, a parameter budget or a FLOPs budget.

``params=0.8`` keeps 80% of the non-embedding parameters; ``flops=0.7`` keeps 70%
of the FLOPs of one forward pass on the example inputs.  Parameter counts of a
candidate plan are exact (computed from the layouts, without slicing anything).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from math import prod
from typing import Any, Callable

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


class FlopCounter:
    """FLOPs of one forward pass of removal plans, estimated without slicing anything.

    The traced graph is run once under ``torch.utils.flop_counter`` and every op's
    FLOPs are recorded.  A plan scales an op's FLOPs by the kept fraction of every
    atomic axis its tensor operands carry: for a matmul-like op (linear, bmm,
    attention, convolution) the iteration space is spanned exactly by those axes,
    so the count is exact for them (tested against re-counting the pruned model).
    """

    def __init__(self, analysis: Analysis, args: tuple, kwargs: dict[str, Any] | None = None) -> None:
        self.analysis = analysis
        self.per_node = _flops_per_node(analysis.graph_module, args, kwargs or {})
        ctx = analysis.context
        table = analysis.table
        self.atoms: dict[str, frozenset[int]] = {}
        for node in analysis.graph_module.graph.nodes:
            if node.name not in self.per_node:
                continue
            atoms: set[int] = set()
            for arg in node.all_input_nodes:
                lay = ctx.layouts.get(arg)
                if isinstance(lay, list) and all(isinstance(d, tuple) for d in lay):
                    for d in lay:
                        atoms.update(table.atoms(d))
            self.atoms[node.name] = frozenset(atoms)

    @functools.cached_property
    def full(self) -> int:
        """FLOPs before any removal."""
        return sum(self.per_node.values())

    def count(self, plan: dict[int, tuple[int, ...]]) -> int:
        from prunec.passes.structured_removal import RemovalPlan, plan_masks

        kept_1d, kept_pairs = plan_masks(self.analysis, RemovalPlan(plan))
        total = 0.0
        for name, flops in self.per_node.items():
            atoms = self.atoms[name]
            fraction = 1.0
            for a in atoms & kept_1d.keys():
                fraction *= float(kept_1d[a].mean())
            for (a, b), pair in kept_pairs.items():
                if a in atoms and b in atoms:
                    fraction *= float(pair.mean())
                elif a in atoms:  # only the outer axis (k/v projections): a KV group goes when all its heads do
                    fraction *= float(pair.any(axis=1).mean())
                elif b in atoms:
                    fraction *= float(pair.any(axis=0).mean())
            total += flops * fraction
        return int(round(total))


def _flops_per_node(gm: torch.fx.GraphModule, args: tuple, kwargs: dict[str, Any]) -> dict[str, int]:
    """FLOPs of every node of ``gm`` on ``args`` (nodes with none are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    per_node: dict[str, int] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            before = counter.get_total_flops()
            out = super().run_node(n)
            spent = counter.get_total_flops() - before
            if spent:
                per_node[n.name] = int(spent)
            return out

    import torch.utils._pytree as pytree

    flat, _ = pytree.tree_flatten((tuple(args), dict(kwargs)))
    with torch.no_grad(), counter:
        Recorder(gm).run(*flat)
    return per_node


def budget_counter(budget: Budget, analysis: Analysis, args: tuple, kwargs: dict[str, Any] | None = None) -> "ParamCounter | FlopCounter":
    """The counter that measures ``budget``'s metric."""
    if budget.metric == "flops":
        return FlopCounter(analysis, args, kwargs)
    return ParamCounter(analysis)


def solve_ratio(plan_for_ratio: Callable[[float], dict[int, tuple[int, ...]]], counter: "ParamCounter | FlopCounter",
                keep: float, steps: int = 24) -> tuple[float, dict[int, tuple[int, ...]]]:
    """The per-group ratio whose plan keeps closest to (and not below) ``keep`` of the counted metric."""
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


def solve_prefix(candidates: list[tuple[int, tuple[int, ...]]], counter: "ParamCounter | FlopCounter", keep: float) -> dict[int, tuple[int, ...]]:
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
