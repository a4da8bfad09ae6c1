"""The pass API: a pass is a callable ``GraphModule -> PassResult(graph_module, modified)``.

Passes register by name with a decorator that records their declared invariants
(``requires``/``ensures``/``invalidates``), whether they mutate their input and
whether they keep the program's outputs unchanged (``exact``).  The
:mod:`prunec.pass_manager` checks the invariants of a pipeline before running it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch.fx as fx

# Invariants the built-in passes establish or need.  Invariants are plain strings so that
# third-party passes can declare their own; these names are the shared vocabulary.
SHAPES_PROPAGATED = "shapes propagated"
"""Every node's ``meta["val"]`` holds a fake tensor with the node's current shape and dtype."""
NO_DEAD_NODES = "no dead nodes"
"""No pure node without users, and no parameter/buffer that no node reads."""
COSTS_ANNOTATED = "costs annotated"
"""Every node's ``meta`` holds ``prunec_params`` and ``prunec_flops``."""

TRACED_INVARIANTS: tuple[str, ...] = (SHAPES_PROPAGATED,)
"""What :func:`prunec.trace.trace` establishes: ``torch.export`` puts ``meta["val"]`` on every node."""


@dataclass(frozen=True)
class PassResult:
    """What a pass returns: the (possibly new) graph module and whether anything changed."""

    graph_module: fx.GraphModule
    modified: bool


class GraphPass(Protocol):
    def __call__(self, gm: fx.GraphModule) -> PassResult: ...


@dataclass(frozen=True)
class PassInfo:
    """A registered pass and its declared contract.

    ``requires``: invariants that must hold before the pass runs.  ``ensures``: invariants
    that hold after it.  ``invalidates``: invariants a modifying run may break (e.g. a
    rewrite that leaves dead nodes behind).  ``exact``: the pass keeps the program's
    outputs unchanged (up to float rounding), so a numeric check after it is meaningful.
    """

    name: str
    factory: Callable[..., GraphPass]
    doc: str
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    mutates_input: bool = True
    invalidates: tuple[str, ...] = ()
    exact: bool = True
    source: str = "built-in"


_PASSES: dict[str, PassInfo] = {}


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def register_pass(
    name: str,
    *,
    requires: tuple[str, ...] = (),
    ensures: tuple[str, ...] = (),
    mutates_input: bool = True,
    invalidates: tuple[str, ...] = (),
    exact: bool = True,
) -> Callable[[Callable[..., GraphPass]], Callable[..., GraphPass]]:
    """Register a pass under ``name``.

    The decorated object is either the pass itself (a function ``gm -> PassResult``) or a
    class whose instances are passes (its constructor takes the pass's options).
    """

    def deco(factory: Callable[..., GraphPass]) -> Callable[..., GraphPass]:
        module = getattr(factory, "__module__", "") or ""
        source = "built-in" if module.startswith("prunec.") else module
        _PASSES[name] = PassInfo(name, factory, _first_line(factory.__doc__), tuple(requires), tuple(ensures),
                                 mutates_input, tuple(invalidates), exact, source)
        return factory

    return deco


def registered_passes() -> dict[str, PassInfo]:
    """All registered passes by name."""
    return dict(_PASSES)
