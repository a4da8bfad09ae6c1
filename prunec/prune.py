"""The Python API: ``analyze`` and ``prune`` (trace -> analyse -> score -> allocate -> remove)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.fx as fx

from prunec.allocation import Allocator, allocation_needs, get_allocation, lowest_units, ranked_candidates, round_kept
from prunec.analysis.analyze import Analysis, analyze_graph
from prunec.analysis.groups import DEFAULT_KINDS, KINDS, Group
from prunec.attrs import get_path
from prunec.budget import Budget, FlopCounter, ParamCounter, budget_counter, solve_prefix, solve_ratio
from prunec.distributed import shard_batches
from prunec.errors import ConfigError, TransformError
from prunec.gradients import accumulate_gradients
from prunec.importance import ScoringInputs, get_importance
from prunec.passes.bias_compensation import BiasCompensation
from prunec.passes.reconstruction import LeastSquaresReconstruction
from prunec.passes.structured_removal import RemovalPlan, StructuredRemoval
from prunec.recovery import RecoveryConfig, distill
from prunec.sensitivity import SensitivityAllocator, SensitivityConfig, measure_sensitivity
from prunec.stats import collect_input_stats
from prunec.trace import trace


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
    dynamic: bool = True,
) -> Analysis:
    """Trace ``model`` and find its coupled channel groups.

    ``keep_interface`` freezes units that reach a model output, so a pruned model
    stays a drop-in replacement.  ``ignore`` lists parameter names or module
    prefixes whose groups must not be pruned.  ``dynamic`` traces batch and sequence/spatial
    dims symbolically where the model allows (see :func:`prunec.trace.trace`); ``False`` pins
    them to the example's sizes.
    """
    start = time.perf_counter()
    gm = trace(model, example_inputs, example_kwargs, dynamic=dynamic)
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
    non_embedding_before: int = 0
    non_embedding_after: int = 0
    recovery_losses: list[float] = field(default_factory=list)
    # Input name -> its symbolic (dynamic) dims; empty for a static trace, whose reason is static_reason.
    dynamic_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)
    static_reason: str = ""

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


def score_groups(analysis: Analysis, groups: Sequence[Group], importance: str, inputs: ScoringInputs) -> dict[int, np.ndarray]:
    """Importance scores of every unit of each group."""
    estimator = get_importance(importance)
    return {g.id: estimator.fn(analysis, g, inputs) for g in groups}


def plan_removal(
    analysis: Analysis,
    scores: dict[int, np.ndarray],
    *,
    ratio: float,
    kinds: Sequence[str] = DEFAULT_KINDS,
    allocation: str = "uniform",
    budget: Budget | None = None,
    widths: dict[str, int] | None = None,
    model: torch.nn.Module | None = None,
    round_to: int = 1,
    counter: ParamCounter | FlopCounter | None = None,
    allocator: Allocator | None = None,
) -> dict[int, tuple[int, ...]]:
    """Decide which units to remove: ``ratio`` per group, whatever meets ``budget``, or explicit
    target ``widths`` per kind (``{"channels": 1152, "heads": 6}``: every group of that kind keeps
    that many units).

    ``counter`` measures the budget's metric (default: non-embedding parameters; a
    :class:`~prunec.budget.FlopCounter` for ``flops=`` budgets).
    With ``model``, widths are adjusted to what its Hugging Face config can express
    (see :func:`prunec.hf.fit_config_constraints`). ``round_to`` > 1 rounds every pruned
    channel/residual group's kept width to a multiple of it (:func:`prunec.allocation.round_kept`).
    """
    from prunec.hf import fit_config_constraints

    allocator = allocator or get_allocation(allocation)
    groups = select_groups(analysis, kinds)

    def fit(plan: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
        return fit_config_constraints(model, analysis, plan, scores) if model is not None else plan

    if widths:
        removed = {}
        for g in groups:
            if g.kind not in widths:
                continue
            target = widths[g.kind]
            if not 0 < target <= g.size or (g.blocks > 1 and target % g.blocks):
                raise ConfigError(f"cannot keep {target} units of {g.kind} group {g.label} (size {g.size}"
                                  + (f", {g.blocks} KV groups: use a multiple of {g.blocks}" if g.blocks > 1 else "")
                                  + f"); choose a width from 1 to {g.size}")
            removed[g.id] = lowest_units(g, scores[g.id], g.size - target)
        removed = fit(removed)
    elif budget is None:
        removed = fit(allocator(groups, scores, ratio))
    else:
        counter = counter or ParamCounter(analysis)
        if allocation in ("global", "knapsack"):
            ranked = ranked_candidates(groups, scores, per_parameter=allocation == "knapsack")
            removed = fit(solve_prefix(ranked, counter, budget.keep))
        else:
            _, removed = solve_ratio(lambda r: fit(allocator(groups, scores, r)), counter, budget.keep)
    if round_to > 1:
        removed = fit(round_kept(groups, scores, removed, round_to))
    return {gid: units for gid, units in removed.items() if units}


def prune(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
    *,
    ratio: float = 0.3,
    budget: Budget | str | None = None,
    widths: dict[str, int] | None = None,
    kinds: Sequence[str] = DEFAULT_KINDS,
    importance: str = "l2",
    allocation: str = "uniform",
    ignore: Sequence[str] = (),
    keep_interface: bool = True,
    calibration: Sequence[tuple] | None = None,
    bias_compensation: bool = False,
    reconstruct: bool = False,
    recover: RecoveryConfig | None = None,
    round_to: int = 1,
    sensitivity: SensitivityConfig | None = None,
    dynamic: bool = True,
) -> PruneResult:
    """Remove units of the prunable groups of ``model``.

    How much: ``ratio`` of every group's units (uniform), a ``budget`` such as
    ``"params=0.8"`` (keep 80% of the non-embedding parameters), or explicit ``widths``
    per kind (``{"channels": 1152, "heads": 6}``).  Which units:
    the lowest ``importance`` scores (``l1``, ``l2``, ``random``; with
    ``calibration`` batches also ``activation``, ``fluctuation``, ``taylor``),
    distributed by ``allocation`` (``uniform``, ``global``, ``knapsack``, or ``sensitivity``:
    measured loss increase per group on the calibration batches, probed as ``sensitivity`` says).
    ``bias_compensation`` folds the mean contribution of removed inputs into the
    reading layers' biases; ``reconstruct`` refits the reading linear layers by least
    squares on the calibration inputs (both need calibration).  ``recover`` then
    distils the pruned model from ``model`` on the calibration batches. ``round_to`` rounds the
    kept width of every pruned channel/residual group to a multiple of it (a target's vector width).

    ``dynamic`` (default) traces batch and sequence/spatial dims symbolically, so the pruned
    module accepts other batch sizes and lengths/resolutions the model accepts; ``False`` pins them
    to the example's sizes.  A model that only traces statically is traced so, and
    ``PruneResult.static_reason`` says why.

    Returns a :class:`PruneResult` whose ``module`` is a runnable ``nn.Module``
    (the pruned traced graph, in eval mode) called with the same inputs as ``model``.  The
    input model is not modified.
    """
    options = {k: v for k, v in locals().items() if k not in ("model", "example_inputs", "example_kwargs")}
    try:
        return _prune(model, example_inputs, example_kwargs, **options)
    except TransformError as exc:
        if not dynamic:
            raise
        # Some ops' meta kernels take only concrete sizes once widths change (Swin's window pad): prune the
        # static trace instead, and say so, rather than fail.
        result = _prune(model, example_inputs, example_kwargs, **{**options, "dynamic": False})
        return replace(result, dynamic_dims={}, static_reason=f"the pruned graph does not re-propagate with "
                                                              f"symbolic shapes ({str(exc)[:200]}); traced statically")


def _prune(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
    *,
    ratio: float = 0.3,
    budget: Budget | str | None = None,
    widths: dict[str, int] | None = None,
    kinds: Sequence[str] = DEFAULT_KINDS,
    importance: str = "l2",
    allocation: str = "uniform",
    ignore: Sequence[str] = (),
    keep_interface: bool = True,
    calibration: Sequence[tuple] | None = None,
    bias_compensation: bool = False,
    reconstruct: bool = False,
    recover: RecoveryConfig | None = None,
    round_to: int = 1,
    sensitivity: SensitivityConfig | None = None,
    dynamic: bool = True,
) -> PruneResult:
    """:func:`prune` with one trace (dynamic or static)."""
    start = time.perf_counter()
    ratio = validate_ratio(ratio)
    # Explicit widths name the kinds they prune.
    kinds = validate_kinds(tuple(widths) if widths else kinds)
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    estimator = get_importance(importance)
    needs_calibration = estimator.needs or allocation_needs(allocation) or bias_compensation or reconstruct or recover
    if needs_calibration and not calibration:
        what = (f"importance '{importance}'" if estimator.needs else f"allocation '{allocation}'"
                if allocation_needs(allocation) else "bias compensation/reconstruction/recovery")
        raise ConfigError(f"{what} needs calibration data; pass calibration batches (CLI: --calib FILE)")
    analysis = analyze(model, example_inputs, example_kwargs, keep_interface=keep_interface, ignore=ignore,
                       dynamic=dynamic)
    gm: fx.GraphModule = analysis.graph_module
    params_before = count_parameters(gm)
    tensors = {name: get_path(gm, name) for name in analysis.slots}
    inputs = ScoringInputs(tensors)
    groups = select_groups(analysis, kinds)
    # Under torch.distributed each process calibrates on its share; the sums are all-reduced.
    shard = shard_batches(calibration) if calibration else calibration
    if calibration and ("activations" in estimator.needs or bias_compensation or reconstruct):
        # Gram matrices only for the linear layers that read prunable units (reconstruction targets).
        wants_gram = reconstruct or "gram" in estimator.needs
        readers = {m.name for g in groups for m in g.members if m.dim == 1 and not m.shared} if wants_gram else ()
        inputs.stats = collect_input_stats(gm, shard, example_kwargs, covariance_for=readers)
    if calibration and "gradients" in estimator.needs:
        inputs.grads = accumulate_gradients(gm, shard, analysis.slots)
    scores = score_groups(analysis, groups, importance, inputs)
    counter = budget_counter(budget, analysis, example_inputs, example_kwargs) if budget and not widths else None
    allocator = None
    if "calibration" in allocation_needs(allocation) and not widths:
        config = sensitivity or SensitivityConfig()
        curves = measure_sensitivity(gm, analysis, groups, scores, calibration, example_kwargs, config)
        allocator = SensitivityAllocator(curves, config.levels)
    removed = plan_removal(analysis, scores, ratio=ratio, kinds=kinds, allocation=allocation, budget=budget,
                           widths=widths, model=model, round_to=round_to, counter=counter, allocator=allocator)
    if reconstruct and inputs.stats is not None:
        LeastSquaresReconstruction(analysis, removed, inputs.stats)(gm)
    elif bias_compensation and inputs.stats is not None:
        BiasCompensation(analysis, removed, inputs.stats)(gm)
    counter = ParamCounter(analysis)
    non_embedding = (counter.full, counter.count(removed))
    StructuredRemoval(analysis, RemovalPlan(removed))(gm)
    recovery_losses = distill(gm, model, calibration, recover, example_kwargs) if recover else []
    return PruneResult(module=gm, params_before=params_before, params_after=count_parameters(gm),
                       analysis=analysis, removed=removed, seconds=time.perf_counter() - start, original=model,
                       non_embedding_before=non_embedding[0], non_embedding_after=non_embedding[1],
                       recovery_losses=recovery_losses, dynamic_dims=gm.meta.get("prunec_dynamic_dims", {}),
                       static_reason=gm.meta.get("prunec_static_reason", ""))
