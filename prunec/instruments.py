"""Pass instruments: observe every step of a :class:`~prunec.pass_manager.PassManager`.

Like TVM's ``PassInstrument``: an instrument gets a call before and after each pass
and at the start and end of a pipeline.  Instruments nest like context managers: ``before``
hooks run in list order, ``after`` hooks in reverse, so the last instrument is the one closest
to the pass (put ``Timing`` last to time the pass alone).  Instruments are switched on by a context
(``with PassContext(instruments=[...])``) or given to a manager directly, so debugging a
pipeline never needs flags inside passes.

Built in: :class:`PrintIR` (print the IR before/after passes), :class:`DumpIR` (write
``000_input.txt``, ``001_<pass>.txt``, ... to a directory), :class:`Timing`, and
:class:`VerifyEachPass` (shape re-propagation plus a numeric check against the previous
step on sample inputs).  :func:`instruments_from_options` maps the command-line options
every command shares onto instruments.
"""

from __future__ import annotations

import contextvars
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from prunec.errors import ConfigError, TransformError
from prunec.ir import diff_graphs, format_graph


@dataclass(frozen=True)
class StepInfo:
    """Which step is running: its 1-based position in the run, name, round, and the steps before it."""

    index: int
    name: str
    step: Any
    preceding: tuple[str, ...]
    iteration: int = 1

    def describe(self) -> str:
        return f"pass '{self.name}' (step {self.index}, after: {', '.join(self.preceding) or 'nothing'})"


class PassInstrument:
    """Base class: override the hooks you need; all default to doing nothing."""

    def enter_pipeline(self, gm: fx.GraphModule) -> None:
        """Called once with the input graph before the first step."""

    def before_pass(self, gm: fx.GraphModule, info: StepInfo) -> None:
        """Called before each step with the graph it will receive."""

    def after_pass(self, gm: fx.GraphModule, info: StepInfo, modified: bool) -> None:
        """Called after each step with the graph it returned and its ``modified`` flag."""

    def exit_pipeline(self, gm: fx.GraphModule) -> None:
        """Called once at the end (also when a step failed), with the latest graph."""


_CONTEXT: contextvars.ContextVar[tuple[PassInstrument, ...]] = contextvars.ContextVar("prunec_instruments", default=())


class PassContext:
    """``with PassContext(instruments=[...]):`` every pass manager run inside uses these instruments."""

    def __init__(self, instruments: Sequence[PassInstrument] = ()) -> None:
        self.instruments = tuple(instruments)
        self._token: contextvars.Token | None = None

    def __enter__(self) -> "PassContext":
        self._token = _CONTEXT.set(_CONTEXT.get() + self.instruments)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _CONTEXT.reset(self._token)


def current_instruments() -> tuple[PassInstrument, ...]:
    """The instruments of the enclosing :class:`PassContext` s, outermost first."""
    return _CONTEXT.get()


class PrintIR(PassInstrument):
    """Print the IR (``prunec.ir.format_graph``) before and/or after passes.

    ``passes``: only around these pass names (default: every pass).  ``annotations``:
    ``node.meta`` keys to show on each line (``("prunec_params", "prunec_flops")``).
    """

    def __init__(self, *, before: bool = False, after: bool = True, passes: Sequence[str] = (),
                 stream: TextIO | None = None, annotations: Sequence[str] = ()) -> None:
        self.before, self.after, self.passes = before, after, frozenset(passes)
        self.stream = stream
        self.annotations = tuple(annotations)

    def _wanted(self, info: StepInfo) -> bool:
        return not self.passes or info.name in self.passes

    def _print(self, header: str, gm: fx.GraphModule) -> None:
        stream = self.stream or sys.stderr
        stream.write(f"# ---- {header} ----\n{format_graph(gm, annotations=self.annotations)}")
        stream.flush()

    def before_pass(self, gm: fx.GraphModule, info: StepInfo) -> None:
        if self.before and self._wanted(info):
            self._print(f"IR before {info.name} (step {info.index})", gm)

    def after_pass(self, gm: fx.GraphModule, info: StepInfo, modified: bool) -> None:
        if self.after and self._wanted(info):
            self._print(f"IR after {info.name} (step {info.index}, {'modified' if modified else 'unchanged'})", gm)


class DumpIR(PassInstrument):
    """Write the IR to ``directory``: ``000_input.txt``, then ``NNN_<pass>.txt`` after each step.

    Consecutive files diff cleanly (``prunec diff 002_dce.txt 003_merge-linear.txt``).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.files: list[Path] = []

    def _write(self, index: int, name: str, gm: fx.GraphModule) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = self.directory / f"{index:03d}_{safe}.txt"
        path.write_text(format_graph(gm), encoding="utf-8")
        self.files.append(path)

    def enter_pipeline(self, gm: fx.GraphModule) -> None:
        if self.directory.exists() and any(self.directory.iterdir()):
            raise ConfigError(f"IR dump directory {self.directory} is not empty; choose an empty or new directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(0, "input", gm)

    def after_pass(self, gm: fx.GraphModule, info: StepInfo, modified: bool) -> None:
        self._write(info.index, info.name, gm)


@dataclass(frozen=True)
class TimingRecord:
    index: int
    name: str
    seconds: float
    modified: bool


class Timing(PassInstrument):
    """Measure the wall time of every step; :meth:`report` formats a table."""

    def __init__(self) -> None:
        self.records: list[TimingRecord] = []
        self._start = 0.0

    def before_pass(self, gm: fx.GraphModule, info: StepInfo) -> None:
        self._start = time.perf_counter()

    def after_pass(self, gm: fx.GraphModule, info: StepInfo, modified: bool) -> None:
        self.records.append(TimingRecord(info.index, info.name, time.perf_counter() - self._start, modified))

    def report(self) -> str:
        total = sum(r.seconds for r in self.records)
        lines = [f"{'step':>4}  {'pass':<28} {'seconds':>9}  changed"]
        lines += [f"{r.index:>4}  {r.name:<28} {r.seconds:>9.4f}  {'yes' if r.modified else 'no'}" for r in self.records]
        lines.append(f"{'':>4}  {'total':<28} {total:>9.4f}")
        return "\n".join(lines) + "\n"


def _tensors(out: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


class VerifyEachPass(PassInstrument):
    """After every step: re-propagate shapes, then compare outputs with the previous step's.

    Raises ``TransformError`` naming the pass when shape propagation fails, when the pass
    left stale shape metadata, when it reported ``modified=False`` but changed the IR, or
    (for passes registered ``exact``) when an output moved by more than ``atol + rtol*|ref|``
    on the sample inputs.  Passes that are not exact by design (structured removal of live
    units, ...) get the shape checks only; :attr:`numeric_checks` counts the numeric ones.
    """

    def __init__(self, args: tuple, kwargs: dict[str, Any] | None = None, *, atol: float = 1e-5,
                 rtol: float = 1e-4) -> None:
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.atol, self.rtol = atol, rtol
        self.numeric_checks = 0
        self._reference: list[torch.Tensor] | None = None
        self._before_ir = ""

    def _outputs(self, gm: fx.GraphModule) -> list[torch.Tensor]:
        with torch.no_grad():
            found = [t.detach().clone() for t in _tensors(gm(*self.args, **self.kwargs))]
        if not found:  # nothing to compare would make the numeric check vacuous
            raise ConfigError("--verify-each: the program returns no tensors to compare; "
                              "verify a model whose outputs are tensors (or pytrees of them)")
        return found

    def before_pass(self, gm: fx.GraphModule, info: StepInfo) -> None:
        self._before_ir = format_graph(gm)
        self._reference = self._outputs(gm) if getattr(info.step, "exact", True) else None

    def after_pass(self, gm: fx.GraphModule, info: StepInfo, modified: bool) -> None:
        where = info.describe()
        after_ir = format_graph(gm)
        if not modified and after_ir != self._before_ir:
            first = next(l for l in diff_graphs(self._before_ir, after_ir).splitlines()[2:] if l[:1] in "+-")
            raise TransformError(f"{where} reported modified=False but changed the IR ({first.strip()}); "
                                 "return PassResult(gm, modified=True) when the graph changes")
        from prunec.shapes import repropagate

        try:
            stale = repropagate(gm)
        except Exception as exc:  # noqa: BLE001 - any propagation failure is the pass's fault
            raise TransformError(f"{where} broke shape propagation: {type(exc).__name__}: "
                                 f"{(str(exc).splitlines() or [''])[0][:300]}") from exc
        if stale:
            name, (was, now) = next(iter(stale.items()))
            raise TransformError(f"{where} left stale shape metadata on node {name}: recorded {list(was)}, "
                                 f"re-propagated {list(now) if now is not None else None} "
                                 f"({len(stale)} node(s)); update node.meta['val'] or run propagate-shapes")
        if self._reference is None:
            return
        got = self._outputs(gm)
        if len(got) != len(self._reference):
            raise TransformError(f"{where} changed the number of outputs: {len(self._reference)} -> {len(got)}")
        for i, (ref, new) in enumerate(zip(self._reference, got)):
            if ref.shape != new.shape:
                raise TransformError(f"{where} changed output {i}'s shape: {list(ref.shape)} -> {list(new.shape)}")
            if ref.is_floating_point() or new.is_floating_point():
                ok = torch.allclose(new.double(), ref.double(), atol=self.atol, rtol=self.rtol)
                diff = (new.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
            else:
                ok, diff = torch.equal(new, ref), float("nan")
            if not ok:
                raise TransformError(f"{where} changed output {i} by up to {diff:.3g} on the sample inputs "
                                     f"(tolerance atol={self.atol:g}, rtol={self.rtol:g})")
        self.numeric_checks += 1


@dataclass(frozen=True)
class InstrumentOptions:
    """The debugging options every pipeline-running command shares (``opt``, ``compile``)."""

    dump_ir: Path | None = None
    print_ir_before_all: bool = False
    print_ir_after_all: bool = False
    verify_each: bool = False
    time_passes: bool = False
    atol: float = 1e-5
    rtol: float = 1e-4


def instruments_from_options(options: InstrumentOptions, sample_args: tuple = (),
                             sample_kwargs: dict[str, Any] | None = None,
                             stream: TextIO | None = None) -> list[PassInstrument]:
    """The instruments a command's options ask for, outermost first.

    Verification outermost (its reference run is not timed, and a failing step's IR is
    printed and dumped before it raises), timing innermost (it times the pass alone).
    """
    found: list[PassInstrument] = []
    if options.verify_each:
        found.append(VerifyEachPass(sample_args, sample_kwargs, atol=options.atol, rtol=options.rtol))
    if options.print_ir_before_all or options.print_ir_after_all:
        found.append(PrintIR(before=options.print_ir_before_all, after=options.print_ir_after_all, stream=stream))
    if options.dump_ir is not None:
        found.append(DumpIR(options.dump_ir))
    if options.time_passes:
        found.append(Timing())
    return found
