"""Graph diffs: what changed between two printed graphs, node by node and layer by layer.

Both sides are IR text (:func:`prunec.ir.format_graph`), read from an IR dump (``.txt``), a
``.pt2`` program, a ``prunec prune`` output directory (its ``model.pt2``) or any MODEL
argument (traced).  Nodes are matched by name; layers are the owners of parameters
(``model.layers.0.mlp.up_proj``).  FLOPs come from the text alone: each call is replayed
on ``meta`` tensors of the printed shapes under PyTorch's flop counter
(:func:`prunec.metrics.op_flops`), so a dump diffs as well as a program.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunec.errors import ConfigError, PruneError
from prunec.ir import diff_graphs, format_graph

_PARAM = re.compile(r"^%(?P<name>\S+) = param (?P<target>\S+) : (?P<type>.*)$")
_INPUT = re.compile(r"^%(?P<name>\S+) = input : (?P<type>.*)$")
_CALL = re.compile(r"^%(?P<name>\S+) = (?P<target>[^\s(]+)\((?P<args>.*)\) : (?P<type>[^:]*)$")
_TENSOR = re.compile(r"^(?P<dtype>[a-z0-9.]+)\[(?P<dims>[0-9, ]*)\]$")
_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "i64": torch.int64,
           "i32": torch.int32, "b8": torch.bool, "f64": torch.float64}


@dataclass(frozen=True)
class IRNode:
    """One line of printed IR."""

    name: str
    kind: str  # "param", "input", "call" or "return"
    target: str
    args: str
    type: str
    line: str

    @property
    def shape(self) -> tuple[int, ...] | None:
        m = _TENSOR.match(self.type.strip())
        if not m:
            return None
        return tuple(int(d) for d in m.group("dims").split(",") if d.strip())

    @property
    def dtype(self) -> torch.dtype | None:
        m = _TENSOR.match(self.type.strip())
        return _DTYPES.get(m.group("dtype")) if m else None

    @property
    def numel(self) -> int:
        return math.prod(self.shape or ())


def parse_ir(text: str) -> list[IRNode]:
    """The nodes of printed IR, in order; lines that are not IR raise ``ConfigError``."""
    nodes = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        line = line.split("  # ", 1)[0]  # annotations (format_graph(annotations=...)) are not IR
        if m := _PARAM.match(line):
            nodes.append(IRNode(m["name"], "param", m["target"], "", m["type"], line))
        elif m := _INPUT.match(line):
            nodes.append(IRNode(m["name"], "input", "", "", m["type"], line))
        elif m := _CALL.match(line):
            nodes.append(IRNode(m["name"], "call", m["target"], m["args"], m["type"], line))
        elif line.startswith("return "):
            nodes.append(IRNode("return", "return", "", line[len("return "):], "", line))
        else:
            raise ConfigError(f"line {number} is not prunec IR: {line[:80]!r}; pass a file written by "
                              "DumpIR / --dump-ir or prunec.ir.format_graph")
    return nodes


# ---- replaying calls on meta tensors -------------------------------------------------------

def _resolve_op(target: str) -> Any:
    if not target.startswith("aten."):
        return None
    obj: Any = torch.ops
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch._ops.OpOverload) else None


class _Unsupported(Exception):
    pass


def _literal(node: ast.AST, refs: dict[str, Any]) -> Any:
    """Evaluate the small literal language of printed arguments, never executing code."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, refs) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand, refs)
    if isinstance(node, ast.Name):
        if node.id in refs:
            return refs[node.id]
        if node.id in ("inf", "nan"):
            return float(node.id)
        raise _Unsupported(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch":
        value = getattr(torch, node.attr, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            return value
        raise _Unsupported(node.attr)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "device":
        return torch.device("meta")  # replayed on meta whatever the device was
    raise _Unsupported(type(node).__name__)


def _call_args(args: str, refs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    expr = re.sub(r"%([A-Za-z_]\w*)", r"__ref_\1", args)
    call = ast.parse(f"f({expr})", mode="eval").body
    assert isinstance(call, ast.Call)
    return ([_literal(a, refs) for a in call.args],
            {k.arg: _literal(k.value, refs) for k in call.keywords if k.arg is not None})


def node_flops(nodes: list[IRNode]) -> tuple[dict[str, int], int]:
    """FLOPs per call node from the printed shapes; also how many calls could not be replayed."""
    from prunec.metrics import op_flops

    refs: dict[str, Any] = {}
    flops: dict[str, int] = {}
    failed = 0
    for n in nodes:
        if n.shape is not None and n.dtype is not None:
            refs[f"__ref_{n.name}"] = torch.empty(n.shape, dtype=n.dtype, device="meta")
        if n.kind != "call":
            continue
        op = _resolve_op(n.target)
        if op is None:
            continue
        try:
            args, kwargs = _call_args(n.args, refs)
            flops[n.name] = op_flops(op, tuple(args), kwargs)
        except _Unsupported:
            failed += 1
        except Exception:  # noqa: BLE001 - ops that need data (copies out of meta) have no FLOPs to count
            failed += 1
    return flops, failed


# ---- layers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """A parameter owner (``model.layers.0.mlp.up_proj``): its op, main weight shape, params and FLOPs."""

    name: str
    op: str
    shape: tuple[int, ...] | None
    params: int
    flops: int

    @property
    def width(self) -> int | None:
        """Output width: rows of a linear/conv weight, the embedding dim of an embedding, a norm's size."""
        if not self.shape:
            return None
        return self.shape[-1] if self.op == "embedding" else self.shape[0]


def _owner(target: str) -> str:
    return target.rsplit(".", 1)[0] if "." in target else "(root)"


NO_WEIGHTS = "(ops without weights)"


def layers_of(nodes: list[IRNode], flops: dict[str, int]) -> dict[str, Layer]:
    """Per layer: params of its tensors, FLOPs of the calls reading them; weightless calls in one row."""
    params = {n.name: n for n in nodes if n.kind == "param"}
    totals: dict[str, list[Any]] = {}
    for p in params.values():
        row = totals.setdefault(_owner(p.target), ["", None, 0, 0])
        row[2] += p.numel
        if p.target.endswith("weight") and row[1] is None:
            row[1] = p.shape
    for n in nodes:
        if n.kind != "call":
            continue
        read = [params[r] for r in re.findall(r"%([A-Za-z_]\w*)", n.args) if r in params]
        owner = _owner(read[0].target) if read else NO_WEIGHTS
        row = totals.setdefault(owner, ["", None, 0, 0])
        if read and not row[0]:
            row[0] = n.target.split(".")[1] if n.target.startswith("aten.") else n.target
        row[3] += flops.get(n.name, 0)
    return {name: Layer(name, op or "", shape, p, f) for name, (op, shape, p, f) in totals.items()}


# ---- the diff -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerChange:
    name: str
    op: str
    before: Layer | None
    after: Layer | None

    @property
    def changed(self) -> bool:
        if self.before is None or self.after is None:
            return True
        return (self.before.shape, self.before.params, self.before.flops) != \
            (self.after.shape, self.after.params, self.after.flops)


@dataclass(frozen=True)
class GraphDiff:
    """Everything ``prunec diff`` shows: the unified diff, node changes, per-layer costs."""

    a_name: str
    b_name: str
    a_text: str
    b_text: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[tuple[str, str, str], ...]  # (node, line before, line after)
    layers: tuple[LayerChange, ...]
    unreplayed: tuple[int, int] = (0, 0)
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def unified(self) -> str:
        return diff_graphs(self.a_text, self.b_text, self.a_name, self.b_name)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "a": self.a_name, "b": self.b_name,
            "nodes": {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed)},
            **self.totals,
            "layers": [{"layer": c.name, "op": c.op,
                        "shape_before": list(c.before.shape or ()) if c.before else None,
                        "shape_after": list(c.after.shape or ()) if c.after else None,
                        "params_before": c.before.params if c.before else 0,
                        "params_after": c.after.params if c.after else 0,
                        "flops_before": c.before.flops if c.before else 0,
                        "flops_after": c.after.flops if c.after else 0} for c in self.layers if c.changed],
            "calls_not_replayed_for_flops": list(self.unreplayed),
        }


def diff_ir(a_text: str, b_text: str, a_name: str = "A", b_name: str = "B") -> GraphDiff:
    """Compare two printed graphs."""
    a_nodes, b_nodes = parse_ir(a_text), parse_ir(b_text)
    a_by, b_by = {n.name: n for n in a_nodes}, {n.name: n for n in b_nodes}
    added = tuple(n for n in b_by if n not in a_by)
    removed = tuple(n for n in a_by if n not in b_by)
    changed = tuple((n, a_by[n].line, b_by[n].line) for n in a_by if n in b_by and a_by[n].line != b_by[n].line)
    a_flops, a_failed = node_flops(a_nodes)
    b_flops, b_failed = node_flops(b_nodes)
    a_layers, b_layers = layers_of(a_nodes, a_flops), layers_of(b_nodes, b_flops)
    order = list(a_layers) + [k for k in b_layers if k not in a_layers]
    if NO_WEIGHTS in order:  # the weightless row last
        order.remove(NO_WEIGHTS)
        order.append(NO_WEIGHTS)
    layers = tuple(LayerChange(k, (a_layers.get(k) or b_layers[k]).op, a_layers.get(k), b_layers.get(k)) for k in order)
    totals = {"params_before": sum(l.params for l in a_layers.values()),
              "params_after": sum(l.params for l in b_layers.values()),
              "flops_before": sum(a_flops.values()), "flops_after": sum(b_flops.values()),
              "nodes_before": len(a_nodes), "nodes_after": len(b_nodes)}
    return GraphDiff(a_name, b_name, a_text, b_text, added, removed, changed, layers, (a_failed, b_failed), totals)


def read_ir(source: str, *, seq_len: int = 16) -> str:
    """IR text of an IR dump, a ``.pt2``, a directory with ``model.pt2``, or any MODEL argument (traced)."""
    path = Path(source)
    if path.is_dir() and (path / "model.pt2").is_file():
        path = path / "model.pt2"
    if path.is_file() and path.suffix == ".txt":
        return path.read_text(encoding="utf-8")
    if path.is_file() and path.suffix == ".pt2":
        from prunec.models import register_output_types

        register_output_types()
        try:
            return format_graph(torch.export.load(str(path)).module())
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot load {path}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from exc
    if path.is_dir() and not (path / "config.json").exists():
        raise ConfigError(f"{path} has no model.pt2; pass a `prunec prune` output directory, a .pt2, or an IR dump (.txt)")
    from prunec.models import load_model
    from prunec.trace import trace

    try:
        loaded = load_model(source, seq_len=seq_len)
    except PruneError as exc:
        raise ConfigError(f"cannot read '{source}': not an IR dump (.txt), a .pt2, an output directory with "
                          f"model.pt2, or a model ({exc})") from exc
    return format_graph(trace(loaded.model, loaded.args, loaded.kwargs))


def token_spans(before: str, after: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Both lines as (token, differs) pieces: what a viewer highlights (shapes that changed width)."""
    split = lambda s: re.findall(r"\w+|\W", s)  # noqa: E731
    ta, tb = split(before), split(after)
    a_out: list[tuple[str, bool]] = []
    b_out: list[tuple[str, bool]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).get_opcodes():
        a_out.append(("".join(ta[i1:i2]), op != "equal"))
        b_out.append(("".join(tb[j1:j2]), op != "equal"))
    return [p for p in a_out if p[0]], [p for p in b_out if p[0]]
