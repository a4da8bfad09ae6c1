"""Gradual pruning with evaluation between steps.

The target is reached in ``steps`` equal steps of the parameter budget.  Each
step re-traces the current model, re-collects calibration statistics on it (so
later steps see, and reconstruct against, the already-pruned model), prunes,
and evaluates a metric (lower is better, e.g. perplexity on a held-out split).
A step that makes the metric worse than ``max_step_regression`` times the last
accepted value is rolled back and the schedule stops with the last good model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from prunec.budget import Budget
from prunec.errors import ConfigError
from prunec.prune import PruneResult, prune


@dataclass(frozen=True)
class ScheduleConfig:
    """How to reach a budget: number of steps and the regression tolerance per step."""

    steps: int = 4
    max_step_regression: float = 1.5


@dataclass
class StepRecord:
    step: int
    keep_target: float
    non_embedding_params: int
    metric: float
    accepted: bool
    seconds: float


@dataclass
class ScheduleResult:
    """The last accepted pruning result and what happened at every step."""

    result: PruneResult | None
    base_metric: float
    history: list[StepRecord] = field(default_factory=list)

    @property
    def module(self) -> torch.nn.Module | None:
        return self.result.module if self.result else None

    @property
    def stopped_early(self) -> bool:
        return any(not r.accepted for r in self.history)


def gradual_prune(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
    *,
    budget: Budget | str,
    evaluate: Callable[[torch.nn.Module], float],
    schedule: ScheduleConfig = ScheduleConfig(),
    on_step: Callable[[StepRecord], None] | None = None,
    **prune_options: Any,
) -> ScheduleResult:
    """Prune ``model`` to ``budget`` in ``schedule.steps`` steps, evaluating after each.

    ``prune_options`` are passed to :func:`prunec.prune` (kinds, importance,
    allocation, calibration, reconstruct, ...).  Returns the last accepted result;
    its ``original`` is ``model``, so ``result.to_pretrained()`` still works.
    """
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    if budget.metric != "params":
        raise ConfigError("a gradual schedule needs a params budget (--budget params=FRACTION)")
    if schedule.steps < 1:
        raise ConfigError(f"steps must be at least 1, got {schedule.steps}")
    base = evaluate(model)
    out = ScheduleResult(result=None, base_metric=base)
    current: torch.nn.Module = model
    last_metric = base
    p0 = None
    for step in range(1, schedule.steps + 1):
        start = time.perf_counter()
        keep_abs = 1.0 - (1.0 - budget.keep) * step / schedule.steps
        # The budget of this step is relative to the current model's non-embedding parameters.
        if p0 is None:
            rel = keep_abs
        else:
            rel = min(1.0, keep_abs * p0 / out.result.non_embedding_after)
        result = prune(current, example_inputs, example_kwargs, budget=Budget("params", rel), **prune_options)
        if p0 is None:
            p0 = result.non_embedding_before
        metric = evaluate(result.module)
        accepted = metric <= last_metric * schedule.max_step_regression
        record = StepRecord(step, keep_abs, result.non_embedding_after, metric, accepted, time.perf_counter() - start)
        out.history.append(record)
        if on_step:
            on_step(record)
        if not accepted:
            break
        result.original = model
        result.non_embedding_before = p0
        out.result = result
        current = result.module
        last_metric = metric
    return out
