"""A stable text form of an FX graph: one node per line with op, inputs and shape/dtype.

Two graphs print so that a plain ``difflib`` diff shows exactly what a pass
changed; the tests of passes compare this text with expected text.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import torch
import torch.fx as fx

from prunec.shapes import is_symbolic, size_hint

_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.int64: "i64",
           torch.int32: "i32", torch.bool: "b8", torch.float64: "f64"}


def _size(size: Any) -> str:
    # A symbolic (dynamic) size prints as its symbol (s0, s1 + 1, ...); int() would specialise it.
    return str(size) if is_symbolic(size) else str(size_hint(size))


def _type(val: Any) -> str:
    if isinstance(val, torch.Tensor):
        return f"{_DTYPES.get(val.dtype, str(val.dtype))}[{', '.join(_size(s) for s in val.shape)}]"
    if isinstance(val, (list, tuple)):
        return "(" + ", ".join(_type(v) for v in val) + ")"
    return type(val).__name__ if val is not None else "none"


def _arg(a: Any) -> str:
    if isinstance(a, fx.Node):
        return f"%{a.name}"
    if isinstance(a, (list, tuple)):
        inner = ", ".join(_arg(x) for x in a)
        return f"[{inner}]"
    if isinstance(a, float):
        return f"{a:g}"
    return repr(a)


def _target(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_function":
        return str(t) if hasattr(t, "overloadpacket") else getattr(t, "__name__", str(t))
    return str(t)


def _annotation(node: fx.Node, keys: Sequence[str]) -> str:
    found = [f"{k.removeprefix('prunec_')}={node.meta[k]}" for k in keys if k in node.meta]
    return "  # " + " ".join(found) if found else ""


def format_graph(gm: fx.GraphModule, *, with_params: bool = True, annotations: Sequence[str] = ()) -> str:
    """Print ``gm``'s graph, one node per line; parameters with their shapes first.

    ``annotations``: ``node.meta`` keys to append to call lines as ``  # key=value`` (the
    ``prunec_`` prefix dropped), e.g. ``("prunec_params", "prunec_flops")`` after annotate-costs.
    """
    lines = []
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if node.op == "get_attr":
            if not with_params:
                continue
            obj: Any = gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            lines.append(f"%{node.name} = param {node.target} : {_type(obj)}")
        elif node.op == "placeholder":
            lines.append(f"%{node.name} = input : {_type(val)}")
        elif node.op == "output":
            lines.append(f"return {_arg(node.args[0])}")
        elif node.op == "call_module" and node.target == "_guards_fn":
            continue
        else:
            args = ", ".join([_arg(a) for a in node.args] + [f"{k}={_arg(v)}" for k, v in node.kwargs.items()])
            lines.append(f"%{node.name} = {_target(node)}({args}) : {_type(val)}{_annotation(node, annotations)}")
    return "\n".join(lines) + "\n"


def diff_graphs(before: str, after: str, a: str = "before", b: str = "after") -> str:
    """Unified diff of two printed graphs."""
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), a, b))


def assert_ir(gm: fx.GraphModule, expected: str, *, annotations: Sequence[str] = ()) -> None:
    """Assert that ``gm`` prints as ``expected`` (dedented); on mismatch the message is a unified diff.

    The oracle of pass tests: write the IR you expect after your pass, compare.
    ``annotations`` as in :func:`format_graph`.
    """
    import textwrap

    got = format_graph(gm, annotations=annotations)
    want = textwrap.dedent(expected).lstrip("\n")
    if got != want:
        raise AssertionError("IR differs from the expected text:\n" + diff_graphs(want, got, "expected", "got"))
