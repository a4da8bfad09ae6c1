"""The regression gate's vocabulary: a metric measures base and pruned, a rule judges the result.

A :class:`Metric` is data: its name, what it needs (a tokenizer or not), a ``measure`` function
and the :class:`Rule` that turns the measured value into pass/fail with one of the tolerances in
:class:`GateOptions`.  :mod:`prunec.check_metrics` holds the registry of metrics by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from prunec.models import LoadedModel


@dataclass(frozen=True)
class GateOptions:
    """Tolerances and evaluation settings of one ``prunec check`` run (the CLI's options)."""

    max_ratio: float = 1.2  # ppl: pruned/base perplexity at most
    min_cosine: float = 0.95  # cosine: mean embedding cosine at least
    max_drop: float = 0.01  # accuracy: absolute accuracy drop at most
    min_retention: float = 0.9  # qa: share of the base's correct answers kept, at least
    min_ratio: float = 0.9  # rouge: pruned/base ROUGE-L at least
    min_agreement: float = 0.8  # agreement: token-level agreement with the base, at least
    seq_len: int = 512  # ppl: tokens per window
    windows: int = 24  # ppl: windows; cosine: lines
    max_new_tokens: int = 32  # generation metrics: tokens generated per prompt
    chat_template: bool = True  # generation metrics: wrap prompts in the tokenizer's chat template, if it has one
    limit: int | None = None  # generation metrics: use only the first N records


@dataclass(frozen=True)
class CheckContext:
    """What a metric's ``measure`` gets: both models, the shared tokenizer, the data and the options."""

    base: LoadedModel
    pruned: LoadedModel
    pruned_spec: str
    data: Path
    tokenizer: Any
    options: GateOptions

    @property
    def traced_len(self) -> int | None:
        """The example length of a ``.pt2`` pruned program (fed to ppl/cosine/accuracy as its static length)."""
        return self.pruned.args[0].shape[-1] if Path(self.pruned_spec).suffix == ".pt2" else None


@dataclass(frozen=True)
class Measurement:
    """Base and pruned figures, the value the rule judges, and metric-specific details for the report."""

    base: float
    pruned: float
    value: float
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Rule:
    """Pass when ``value`` is on the good side of the tolerance stored in ``GateOptions.<option>``."""

    quantity: str  # how the report names the judged value: "ratio", "drop", "retention", ...
    option: str  # the GateOptions field that holds the tolerance
    higher_is_better: bool

    def tolerance(self, options: GateOptions) -> float:
        return float(getattr(options, self.option))

    def passes(self, value: float, options: GateOptions) -> bool:
        limit = self.tolerance(options)
        return value >= limit if self.higher_is_better else value <= limit

    def describe(self, options: GateOptions) -> str:
        return f"{self.quantity} {'>=' if self.higher_is_better else '<='} {self.tolerance(options)}"


@dataclass(frozen=True)
class Metric:
    """One entry of the gate's registry."""

    name: str
    help: str
    measure: Callable[[CheckContext], Measurement]
    rule: Rule
    needs_tokenizer: bool = True
    # Reads --data and raises ConfigError on a bad record: run before the models load, so a typo
    # in the data costs a second, not a model load.
    check_data: Callable[[Path], Any] | None = None


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check, as printed (``--json``: :meth:`as_json`)."""

    metric: str
    measurement: Measurement
    rule: Rule
    limit: str
    passed: bool

    def as_json(self) -> dict[str, Any]:
        m = self.measurement
        out: dict[str, Any] = {"metric": self.metric, "base": m.base, "pruned": m.pruned, "value": m.value,
                               "limit": self.limit, "passed": self.passed}
        if m.details:
            out["details"] = dict(m.details)
        return out


def run_check(metric: Metric, context: CheckContext) -> CheckResult:
    """Measure with ``metric`` and judge the value with its rule."""
    measurement = metric.measure(context)
    rule = metric.rule
    return CheckResult(metric.name, measurement, rule, rule.describe(context.options),
                       rule.passes(measurement.value, context.options))
