"""The pass API: a pass is a callable ``GraphModule -> PassResult(graph_module, modified)``.

Passes register by name with a decorator that records their declared invariants
(``requires``/``ensures``) and whether they mutate their input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch.fx as fx


@dataclass(frozen=True)
class PassResult:
    """What a pass returns: the (possibly new) graph module and whether anything changed."""

    graph_module: fx.GraphModule
    modified: bool


class GraphPass(Protocol):
    def __call__(self, gm: fx.GraphModule) -> PassResult: ...


@dataclass(frozen=True)
class PassInfo:
    """A registered pass and its declared contract."""

    name: str
    factory: Callable[..., GraphPass]
    doc: str
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    mutates_input: bool = True


_PASSES: dict[str, PassInfo] = {}


def register_pass(
    name: str,
    *,
    requires: tuple[str, ...] = (),
    ensures: tuple[str, ...] = (),
    mutates_input: bool = True,
) -> Callable[[Callable[..., GraphPass]], Callable[..., GraphPass]]:
    """Register a pass (a callable, or a class whose instances are callables) under ``name``."""

    def deco(factory: Callable[..., GraphPass]) -> Callable[..., GraphPass]:
        doc = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
        _PASSES[name] = PassInfo(name, factory, doc, requires, ensures, mutates_input)
        return factory

    return deco


def registered_passes() -> dict[str, PassInfo]:
    """All registered passes by name."""
    return dict(_PASSES)
