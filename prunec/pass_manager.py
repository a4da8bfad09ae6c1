"""The pass manager: run a straight-line pipeline of named passes, checking their contracts.

A pipeline is a list of :class:`Step` s, each a named pass with its declared
``requires``/``ensures``/``invalidates``.  :class:`PassManager` checks the whole
pipeline's contracts *before* running anything (a step whose ``requires`` no earlier
step ``ensures``, and that was not established at the start, is an error naming the
step and the steps before it), then runs the steps in order, optionally repeating a
step (or the whole pipeline) until it reports no change.  Instruments
(:mod:`prunec.instruments`) observe every step: print or dump the IR, time, verify.

Example::

    pm = PassManager([Step.of("fold-batchnorm"), Step.of("remove-noops", fixed_point=True), Step.of("dce")])
    with PassContext(instruments=[DumpIR("ir/")]):
        result = pm.run(gm)
"""

from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch.fx as fx

from prunec.errors import ConfigError, PruneError, TransformError
from prunec.instruments import PassInstrument, StepInfo, current_instruments
from prunec.pass_api import TRACED_INVARIANTS, GraphPass, PassResult, registered_passes


@dataclass(frozen=True)
class Step:
    """One named step of a pipeline: a pass and its declared contract.

    Build it from the registry with :meth:`Step.of` (``Step.of("drop-blocks", blocks=(1,))``)
    or around any callable with :meth:`Step.custom`.  ``fixed_point``: repeat this step until
    it reports ``modified=False`` (at most the manager's ``max_iterations`` times).
    """

    name: str
    run: GraphPass
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    invalidates: tuple[str, ...] = ()
    exact: bool = True
    fixed_point: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    mutates_input: bool = True

    @classmethod
    def of(cls, pass_name: str, /, *, fixed_point: bool = False, **options: Any) -> "Step":
        """A step running the registered pass ``pass_name``; ``options`` go to its constructor."""
        passes = registered_passes()
        info = passes.get(pass_name)
        if info is None:
            known = ", ".join(sorted(passes)) or "none (call prunec.pass_loading.load_builtin_passes())"
            raise ConfigError(f"unknown pass '{pass_name}'; known passes: {known} (list them with `prunec passes`)")
        if isinstance(info.factory, type):
            needed = [p.name for p in inspect.signature(info.factory).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                      and p.name not in options]
            if needed:
                raise ConfigError(f"pass '{pass_name}' needs the option(s) {', '.join(needed)}; give them as "
                                  f"{pass_name}({needed[0]}=...), or from Python when they are objects")
            try:
                run = info.factory(**options)
            except TypeError as exc:
                raise ConfigError(f"pass '{pass_name}': bad options {options}: {exc}") from exc
        elif options:
            raise ConfigError(f"pass '{pass_name}' takes no options (got {', '.join(options)})")
        else:
            run = info.factory
        return cls(pass_name, run, info.requires, info.ensures, info.invalidates, info.exact, fixed_point,
                   tuple(sorted(options.items())), info.mutates_input)

    @classmethod
    def custom(cls, name: str, run: Callable[[fx.GraphModule], PassResult], *, requires: tuple[str, ...] = (),
               ensures: tuple[str, ...] = (), invalidates: tuple[str, ...] = (), exact: bool = True,
               fixed_point: bool = False, mutates_input: bool = True) -> "Step":
        """A step around an unregistered callable (a lambda in a script, a pass under test)."""
        return cls(name, run, tuple(requires), tuple(ensures), tuple(invalidates), exact, fixed_point, (),
                   mutates_input)

    @property
    def label(self) -> str:
        """The step as written in a pipeline spec: ``name`` or ``name(k=v, ...)``."""
        if not self.options:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v!r}" for k, v in self.options) + ")"


@dataclass(frozen=True)
class StepRecord:
    """What one executed step did."""

    index: int
    name: str
    iteration: int
    modified: bool


@dataclass(frozen=True)
class PipelineResult:
    """The final graph module, whether any step changed it, and every executed step in order."""

    graph_module: fx.GraphModule
    modified: bool
    history: tuple[StepRecord, ...] = field(default_factory=tuple)


def _after(state: frozenset[str], step: Step) -> frozenset[str]:
    # Worst case: the step modifies the graph, breaking what it invalidates; what it ensures holds after.
    return (state - set(step.invalidates)) | set(step.ensures)


def _names(items: Sequence[Step] | Sequence[StepRecord]) -> str:
    return ", ".join(i.name for i in items) if items else "nothing"


def check_contracts(steps: Sequence[Step], established: Sequence[str], *, repeated: bool = False) -> None:
    """Raise ``ConfigError`` naming the first step whose ``requires`` is not met.

    Assumes every step modifies the graph (the worst case for ``invalidates``).  With
    ``repeated`` the pipeline is checked for every round until the invariant set repeats.
    """
    state = frozenset(established)
    seen: set[frozenset[str]] = set()
    providers = registered_passes()
    while state not in seen:
        seen.add(state)
        for i, step in enumerate(steps):
            missing = [r for r in step.requires if r not in state]
            if missing:
                suppliers = sorted(n for n, info in providers.items() if missing[0] in info.ensures)
                hint = f"put a pass that ensures it before it ({', '.join(suppliers)})" if suppliers else \
                    "establish it before the pipeline (PassManager(established=...))"
                raise ConfigError(
                    f"pass '{step.name}' (step {i + 1} of {len(steps)}) requires '{missing[0]}', which does not "
                    f"hold after the passes before it ({_names(steps[:i])}; established at the start: "
                    f"{', '.join(sorted(established)) or 'nothing'}); {hint}")
            state = _after(state, step)
        if not repeated:
            return


class PassManager:
    """Run a straight-line pipeline of steps with contract checks and instruments.

    ``established``: invariants that hold for the input graph (a freshly traced graph has
    :data:`~prunec.pass_api.TRACED_INVARIANTS`).  ``fixed_point``: repeat the whole
    pipeline until no step modifies the graph.  ``max_iterations`` bounds every repetition;
    not converging by then is a ``TransformError``.  ``instruments`` add to those of the
    enclosing :class:`~prunec.instruments.PassContext`.  ``preserve_input``: deep-copy the
    input graph module before the first step that mutates its input, so the caller's stays as it was.
    """

    def __init__(self, steps: Sequence[Step], *, established: Sequence[str] = TRACED_INVARIANTS,
                 fixed_point: bool = False, max_iterations: int = 10,
                 instruments: Sequence[PassInstrument] = (), preserve_input: bool = False) -> None:
        if max_iterations < 1:
            raise ConfigError(f"max_iterations must be at least 1 (got {max_iterations})")
        self.steps = tuple(steps)
        self.established = tuple(established)
        self.fixed_point = fixed_point
        self.max_iterations = max_iterations
        self.instruments = tuple(instruments)
        self.preserve_input = preserve_input
        if any(not s.name for s in self.steps):
            raise ConfigError("every pipeline step needs a name; give Step.custom a name")
        check_contracts(self.steps, self.established, repeated=fixed_point)

    def run(self, gm: fx.GraphModule) -> PipelineResult:
        """Run the pipeline on ``gm`` and return the final graph module and the step history."""
        instruments = current_instruments() + self.instruments
        history: list[StepRecord] = []
        if self.preserve_input and any(s.mutates_input for s in self.steps):
            with warnings.catch_warnings():  # torch's pytree specs warn about their own deprecated copy path
                warnings.simplefilter("ignore", FutureWarning)
                gm = copy.deepcopy(gm)
        for inst in instruments:
            inst.enter_pipeline(gm)
        try:
            for round_ in range(1, self.max_iterations + 1):
                round_modified = False
                for step in self.steps:
                    gm, modified = self._run_step(gm, step, instruments, history, round_)
                    round_modified |= modified
                if not (self.fixed_point and round_modified):
                    break
            else:
                still = sorted({r.name for r in history if r.modified and r.iteration == self.max_iterations})
                raise TransformError(
                    f"pipeline did not reach a fixed point in {self.max_iterations} rounds (still modifying: "
                    f"{', '.join(still)}); raise max_iterations or check that the passes report modified honestly")
        finally:
            for inst in reversed(instruments):
                inst.exit_pipeline(gm)
        return PipelineResult(gm, any(r.modified for r in history), tuple(history))

    def _run_step(self, gm: fx.GraphModule, step: Step, instruments: Sequence[PassInstrument],
                  history: list[StepRecord], round_: int) -> tuple[fx.GraphModule, bool]:
        step_modified = False
        for _ in range(self.max_iterations):
            info = StepInfo(index=len(history) + 1, name=step.name, step=step,
                            preceding=tuple(r.name for r in history), iteration=round_)
            for inst in instruments:
                inst.before_pass(gm, info)
            result = self._invoke(gm, step, info)
            for inst in reversed(instruments):  # instruments nest: the last one is closest to the pass
                inst.after_pass(result.graph_module, info, result.modified)
            history.append(StepRecord(info.index, step.name, round_, result.modified))
            gm = result.graph_module
            step_modified |= result.modified
            if not (step.fixed_point and result.modified):
                return gm, step_modified
        raise TransformError(f"pass '{step.name}' did not reach a fixed point in {self.max_iterations} runs "
                             f"(after: {_names(history[:-self.max_iterations])}); raise max_iterations or "
                             "check that it reports modified honestly")

    @staticmethod
    def _invoke(gm: fx.GraphModule, step: Step, info: StepInfo) -> PassResult:
        after = f"after: {', '.join(info.preceding) or 'nothing'}"
        try:
            result = step.run(gm)
        except PruneError as exc:
            raise type(exc)(f"pass '{step.name}' (step {info.index}, {after}) failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any failure inside a pass is reported with its step
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise TransformError(f"pass '{step.name}' (step {info.index}, {after}) failed: "
                                 f"{type(exc).__name__}: {first}") from exc
        if not isinstance(result, PassResult):
            raise TransformError(f"pass '{step.name}' (step {info.index}, {after}) returned "
                                 f"{type(result).__name__}; a pass must return PassResult(graph_module, modified)")
        return result


def run_passes(gm: fx.GraphModule, steps: Sequence[Step], *, instruments: Sequence[PassInstrument] = (),
               established: Sequence[str] = TRACED_INVARIANTS, fixed_point: bool = False) -> PipelineResult:
    """Run ``steps`` on ``gm`` with ``instruments``: the one call a command needs (``opt``, ``compile``)."""
    return PassManager(steps, established=established, fixed_point=fixed_point, instruments=instruments).run(gm)
