"""The op-rule registry: how each ATen op couples the dimensions of its inputs and outputs.

Rules are data keyed by op (an ``OpOverload``, its ``OpOverloadPacket`` or a plain
Python callable such as ``operator.getitem``), or by the exact qualified schema name
(``"transformers::grouped_mm_fallback"``) for custom ops that a library registers only once it
is imported; one op family per module in ``prunec.rules``.  A rule has two parts:

* ``analyze(ctx, node)`` sets the layouts of the node's output dimensions and
  unifies the layouts of coupled input dimensions (see ``prunec.analysis.context``);
* ``rewrite(rw, node)`` (optional) updates the node's constant arguments once
  widths have changed (view sizes, split sizes, conv groups, ...).

An op with no rule is not an error: the analysis freezes every dimension it
touches and records why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

AnalyzeFn = Callable[[Any, Any], None]
RewriteFn = Callable[[Any, Any], None]


@dataclass(frozen=True)
class Rule:
    """How one op family is analysed and rewritten."""

    name: str
    analyze: AnalyzeFn
    rewrite: RewriteFn | None = None


_RULES: dict[Any, Rule] = {}


def register_rule(*targets: Any, rewrite: RewriteFn | None = None) -> Callable[[AnalyzeFn], AnalyzeFn]:
    """Decorator: register ``analyze`` (and optionally ``rewrite``) for each of ``targets``."""

    def deco(fn: AnalyzeFn) -> AnalyzeFn:
        for target in targets:
            _RULES[target] = Rule(name=fn.__name__, analyze=fn, rewrite=rewrite)
        return fn

    return deco


def lookup_rule(target: Any) -> Rule | None:
    """The rule for ``target``: an exact overload first, then its overload packet, then the
    packet's qualified schema name."""
    rule = _RULES.get(target)
    if rule is None:
        packet = getattr(target, "overloadpacket", None)
        if packet is not None:
            rule = _RULES.get(packet) or _RULES.get(getattr(packet, "_qualified_op_name", None))
    return rule


def registered_targets() -> list[Any]:
    """All registered op targets (for listing and tests)."""
    return list(_RULES)
