"""Gradual pruning with evaluation between steps.

The target is reached in ``steps`` equal steps of the parameter budget.  Each
step re-traces the current model, re-collects calibration statistics on it (so
later steps see, and reconstruct against, the already-pruned model), prunes,
and evaluates a metric (lower is better, e.g. perplexity on a held-out split).
With ``recover``, each step's pruned model is first fine-tuned (e.g. distilled from
the original, :func:`prunec.recovery.distill`) and then evaluated.
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
from prunec.recovery import own_parameters


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
    recover: Callable[[torch.nn.Module], Any] | None = None,
    **prune_options: Any,
) -> ScheduleResult:
    """Prune ``model`` to ``budget`` in ``schedule.steps`` steps, evaluating after each.

    ``prune_options`` are passed to :func:`prunec.prune` (kinds, importance,
    allocation, calibration, reconstruct, ...).  ``recover(module)``, when given, trains each
    step's pruned module in place before it is evaluated.  Returns the last accepted result;
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
        if recover is not None:
            # The step's module shares its untouched tensors with the previous step's; training them
            # in place would change the model a rolled-back step falls back to.
            own_parameters(result.module, current)
            recover(result.module)
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
