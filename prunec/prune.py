"""The Python API: ``analyze`` and ``prune`` (trace -> analyse -> score -> allocate -> remove)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.fx as fx

from prunec.allocation import get_allocation
from prunec.analysis.analyze import Analysis, analyze_graph
from prunec.analysis.groups import KINDS, DEFAULT_KINDS, Group
from prunec.errors import ConfigError
from prunec.importance import get_importance
from prunec.trace import trace
from prunec.passes.structured_removal import RemovalPlan, StructuredRemoval


def count_parameters(module: torch.nn.Module) -> int:
    """Number of distinct parameter elements (tied parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def analyze(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
    *,
    keep_interface: bool = True,
    ignore: Sequence[str] = (),
) -> Analysis:
    """Trace ``model`` and find its coupled channel groups.

    ``keep_interface`` freezes units that reach a model output, so a pruned model
    stays a drop-in replacement.  ``ignore`` lists parameter names or module
    prefixes whose groups must not be pruned.
    """
    start = time.perf_counter()
    gm = trace(model, example_inputs, example_kwargs)
    traced = time.perf_counter() - start
    analysis = analyze_graph(gm, keep_interface=keep_interface, ignore=tuple(ignore))
    analysis.trace_seconds = traced
    return analysis


@dataclass
class PruneResult:
    """The outcome of :func:`prune`."""

    module: torch.nn.Module
    params_before: int
    params_after: int
    analysis: Analysis
    removed: dict[int, tuple[int, ...]] = field(default_factory=dict)
    seconds: float = 0.0
    original: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def removed_fraction(self) -> float:
        return 1.0 - self.params_after / self.params_before if self.params_before else 0.0

    def to_pretrained(self) -> torch.nn.Module:
        """The pruned model as an instance of the original Hugging Face class, config updated.

        ``save_pretrained`` on it gives a directory that stock ``from_pretrained``
        reloads.  Supported for the LLaMA family and BERT (see :mod:`prunec.hf`).
        """
        from prunec.hf import to_pretrained

        if self.original is None:
            raise ConfigError("this result does not know its original model")
        return to_pretrained(self.original, self.module)


def validate_ratio(ratio: float) -> float:
    if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"ratio must be in [0, 1), got {ratio!r}; e.g. 0.3 removes 30% of each group's units")
    return float(ratio)


def validate_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"unknown kind(s) {unknown or kinds}; choose from: {', '.join(KINDS)}")
    return kinds


def select_groups(analysis: Analysis, kinds: Sequence[str]) -> list[Group]:
    return [g for g in analysis.prunable_groups if g.kind in kinds]


def plan_removal(
    analysis: Analysis,
    tensors: dict[str, torch.Tensor],
    *,
    ratio: float,
    kinds: Sequence[str] = DEFAULT_KINDS,
    importance: str = "l2",
    allocation: str = "uniform",
    model: torch.nn.Module | None = None,
) -> dict[int, tuple[int, ...]]:
    """Score the selected groups and decide which units to remove.

    With ``model``, widths are adjusted to what its Hugging Face config can express
    (see :func:`prunec.hf.fit_config_constraints`).
    """
    estimator = get_importance(importance)
    allocator = get_allocation(allocation)
    groups = select_groups(analysis, kinds)
    scores: dict[int, np.ndarray] = {g.id: estimator(analysis, g, tensors) for g in groups}
    removed = allocator(groups, scores, ratio)
    if model is not None:
        from prunec.hf import fit_config_constraints

        removed = fit_config_constraints(model, analysis, removed, scores)
    return removed


def prune(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
    *,
    ratio: float = 0.3,
    kinds: Sequence[str] = DEFAULT_KINDS,
    importance: str = "l2",
    allocation: str = "uniform",
    ignore: Sequence[str] = (),
    keep_interface: bool = True,
) -> PruneResult:
    """Remove a fraction ``ratio`` of the units of every prunable group of ``model``.

    Returns a :class:`PruneResult` whose ``module`` is a runnable ``nn.Module``
    (the pruned traced graph) called with the same inputs as ``model``.  The
    input model is not modified.
    """
    start = time.perf_counter()
    ratio = validate_ratio(ratio)
    kinds = validate_kinds(kinds)
    get_importance(importance)
    get_allocation(allocation)
    analysis = analyze(model, example_inputs, example_kwargs, keep_interface=keep_interface, ignore=ignore)
    gm: fx.GraphModule = analysis.graph_module
    params_before = count_parameters(gm)
    tensors = {name: _lookup(gm, name) for name in analysis.slots}
    removed = plan_removal(analysis, tensors, ratio=ratio, kinds=kinds, importance=importance,
                           allocation=allocation, model=model)
    removed = {gid: units for gid, units in removed.items() if units}
    StructuredRemoval(analysis, RemovalPlan(removed))(gm)
    return PruneResult(module=gm, params_before=params_before, params_after=count_parameters(gm),
                       analysis=analysis, removed=removed, seconds=time.perf_counter() - start, original=model)


def _lookup(gm: fx.GraphModule, name: str) -> torch.Tensor:
    obj: Any = gm
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
