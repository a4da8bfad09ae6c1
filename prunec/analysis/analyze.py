"""Analyse: walk the traced graph, apply op rules, and collect coupled channel groups."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from math import prod
from typing import Any, Iterable, Sequence

import networkx as nx
import numpy as np
import torch
import torch.fx as fx

import prunec.rules  # noqa: F401  (registers the op rules)
from prunec.analysis.axes import AxisTable, Layout
from prunec.attrs import get_path
from prunec.analysis.context import AnalysisContext
from prunec.analysis.groups import Group, Member
from prunec.rules.registry import lookup_rule
from prunec.shapes import size_hint


@dataclass
class Slot:
    """A parameter, buffer or constant tensor read by the graph, with its dims' layouts."""

    name: str
    role: str
    shape: tuple[int, ...]
    dims: list[Layout]


@dataclass
class Analysis:
    """The result of :func:`analyze_graph`: groups plus everything the transform needs."""

    graph_module: fx.GraphModule
    groups: list[Group]
    table: AxisTable
    context: AnalysisContext
    slots: dict[str, Slot]
    aliases: dict[str, list[str]]
    seconds: float
    trace_seconds: float = 0.0
    _dep_graph: nx.Graph | None = field(default=None, repr=False)

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    @property
    def unhandled_ops(self) -> list[tuple[str, str]]:
        """(node, reason) for each op that had no rule and froze what it touched."""
        return list(self.context.unhandled)

    def unit_coords(self, group: Group, member: Member) -> np.ndarray:
        """For every index of ``member``'s dim, the group unit it belongs to (-1: none)."""
        layout = self.table.resolve(self.slots[member.name].dims[member.dim])
        return unit_coords(self.table, layout, group.axes)

    @property
    def dependency_graph(self) -> nx.Graph:
        """The dependency graph: tensor slots (param/buffer dims) linked to the axes they share.

        Nodes are ``("axis", id)`` and ``("slot", name, dim)``; each group is the
        star of its axes.  Built on first use.
        """
        if self._dep_graph is None:
            g = nx.Graph()
            for slot in self.slots.values():
                for d, lay in enumerate(slot.dims):
                    s = ("slot", slot.name, d)
                    g.add_node(s, role=slot.role, size=slot.shape[d])
                    for atom in self.table.atoms(lay):
                        g.add_node(("axis", atom), size=self.table.size(atom))
                        g.add_edge(s, ("axis", atom))
            self._dep_graph = g
        return self._dep_graph

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for g in self.prunable_groups:
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
        return {
            "groups": len(self.groups),
            "prunable": len(self.prunable_groups),
            "frozen": len(self.groups) - len(self.prunable_groups),
            "prunable_by_kind": kinds,
            "unhandled_ops": sorted({r for _, r in self.unhandled_ops}),
            "analysis_seconds": round(self.seconds, 3),
        }


def unit_coords(table: AxisTable, layout: Layout, axes: Sequence[int]) -> np.ndarray:
    """Map each position of a dim with ``layout`` to a unit of the group on ``axes`` (-1: none)."""
    parts = []
    for seg in layout:
        sizes = [table.size(a) for a in seg]
        n = prod(sizes)
        out = np.full(n, -1, dtype=np.int64)
        if seg:
            coords = np.unravel_index(np.arange(n), sizes)
            if len(axes) == 1:
                if axes[0] in seg:
                    out = coords[seg.index(axes[0])].astype(np.int64)
            else:
                # Compound (GQA) units exist only where both axes are present; the outer axis
                # alone (k/v projections) is shared by all units of its KV group.
                outer, inner = axes
                if outer in seg and inner in seg:
                    out = (coords[seg.index(outer)] * table.size(inner) + coords[seg.index(inner)]).astype(np.int64)
        parts.append(out)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _walk(ctx: AnalysisContext, gm: fx.GraphModule, keep_interface: bool,
          slots: dict[str, Slot], aliases: dict[str, list[str]]) -> None:
    param_names = {n for n, _ in gm.named_parameters(remove_duplicate=False)}
    buffer_names = {n for n, _ in gm.named_buffers(remove_duplicate=False)}
    first_of: dict[int, str] = {}
    # Every attribute path of each tensor object: tied weights show up under several names.
    names_of: dict[int, list[str]] = {}
    for name, t in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False)):
        names_of.setdefault(id(t), []).append(name)
    for node in ctx.graph.nodes:
        if node.op == "placeholder":
            ctx.layouts[node] = ctx.fresh_for(node.meta.get("val"))
            ctx.freeze_value(node, f"model input '{node.name}'")
        elif node.op == "get_attr":
            try:
                tensor = get_path(gm, node.target)
            except AttributeError:
                tensor = None
            if not isinstance(tensor, torch.Tensor):
                ctx.layouts[node] = None
                continue
            ctx.layouts[node] = ctx.fresh_for(tensor)
            ident = id(tensor)
            if ident in first_of:
                # Tied weights (embedding <-> lm_head): one tensor, one set of layouts.
                owner = slots[first_of[ident]]
                for a, b in zip(owner.dims, ctx.layouts[node]):
                    ctx.unify(a, b, "tied parameters")
                ctx.layouts[node] = owner.dims
                if node.target not in aliases[owner.name]:
                    aliases[owner.name].append(node.target)
                continue
            first_of[ident] = node.target
            role = "parameter" if node.target in param_names else "buffer" if node.target in buffer_names else "constant"
            slots[node.target] = Slot(node.target, role, tuple(tensor.shape), ctx.layouts[node])
            aliases[node.target] = [node.target] + [n for n in names_of.get(ident, []) if n != node.target]
        elif node.op == "call_function":
            rule = lookup_rule(node.target)
            if rule is None:
                _unhandled(ctx, node, f"no rule for {_op_label(node.target)}")
                continue
            try:
                rule.analyze(ctx, node)
            except Exception as exc:  # noqa: BLE001 - a rule failure must freeze, never crash
                _unhandled(ctx, node, f"rule for {_op_label(node.target)} failed: {type(exc).__name__}: {exc}")
                continue
            if node not in ctx.layouts:
                ctx.layouts[node] = ctx.fresh_for(node.meta.get("val"))
            elif not _consistent(ctx, node):
                # A rule bug must never turn into a wrong model: freeze instead.
                _unhandled(ctx, node, f"rule for {_op_label(node.target)} gave inconsistent shapes")
        elif node.op == "output":
            if keep_interface:
                for arg in _flatten(node.args):
                    if isinstance(arg, fx.Node):
                        ctx.freeze_value(arg, "model output (kept as the model's interface)")
        elif node.op == "call_module" and node.target == "_guards_fn":
            ctx.layouts[node] = None  # torch.export's input guards: no tensor output
        else:
            ctx.layouts[node] = ctx.fresh_for(node.meta.get("val"))
            _unhandled(ctx, node, f"no rule for {node.op} {node.target}")


def _consistent(ctx: AnalysisContext, node: fx.Node) -> bool:
    """Do the layouts a rule set for ``node`` add up to the traced shapes?"""

    def check(lay: Any, val: Any) -> bool:
        if isinstance(val, torch.Tensor):
            return isinstance(lay, list) and len(lay) == val.dim() and all(
                ctx.table.layout_size(ctx.table.resolve(d)) == size_hint(s) for d, s in zip(lay, val.shape))
        if isinstance(val, (list, tuple)) and isinstance(lay, list):
            return len(lay) == len(val) and all(check(l, v) for l, v in zip(lay, val))
        return True

    return check(ctx.layouts[node], node.meta.get("val"))


def _op_label(target: Any) -> str:
    return str(target) if hasattr(target, "overloadpacket") else getattr(target, "__name__", str(target))


def _flatten(obj: Any) -> Iterable[Any]:
    if isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _flatten(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _flatten(x)
    else:
        yield obj


def _unhandled(ctx: AnalysisContext, node: fx.Node, reason: str) -> None:
    for arg in _flatten((node.args, node.kwargs)):
        if isinstance(arg, fx.Node) and arg in ctx.layouts:
            ctx.freeze_value(arg, reason)
    ctx.layouts[node] = ctx.fresh_for(node.meta.get("val"))
    ctx.freeze_value(node, reason)
    ctx.unhandled.append((node.name, reason))


# Dims that are never channel widths (conv kernels): no group is listed for them.
NOT_A_WIDTH = "convolution kernel size"


def _classify(tags: set[str]) -> str:
    for kind in ("heads", "head_dim", "residual"):
        if kind in tags:
            return kind
    return "channels"


def _build_groups(ctx: AnalysisContext, slots: dict[str, Slot], ignore: Sequence[str]) -> list[Group]:
    table = ctx.table
    # Which atomic axes each slot dim touches.
    resolved = {name: [table.resolve(d) for d in slot.dims] for name, slot in slots.items()}
    atom_members: dict[int, list[tuple[str, int]]] = {}
    for name, dims in resolved.items():
        for d, lay in enumerate(dims):
            for atom in {a for seg in lay for a in seg}:
                atom_members.setdefault(atom, []).append((name, d))

    ignored_atoms: set[int] = set()
    for name in slots:
        if any(name == p or name.startswith(p.rstrip(".") + ".") for p in ignore):
            for lay in resolved[name]:
                ignored_atoms.update(a for seg in lay for a in seg)

    compounds: list[tuple[int, int]] = []
    used: set[int] = set()
    seen_decl: set[tuple[int, ...]] = set()
    for decl in ctx.heads:
        lay = table.resolve(decl.layout)
        atoms = tuple(a for seg in lay for a in seg)
        if len(lay) != 1 or atoms in seen_decl or not atoms:
            continue
        seen_decl.add(atoms)
        if len(atoms) == 2 and not used & set(atoms):
            compounds.append(atoms)  # (kv_heads, queries_per_kv)
            used.update(atoms)
        elif len(atoms) > 2:
            for a in atoms:
                table.freeze(((a,),), "attention heads with more than two nested factors")

    groups: list[Group] = []

    def members_of(axes: tuple[int, ...]) -> tuple[Member, ...]:
        out = []
        seen = set()
        for atom in axes:
            for name, d in atom_members.get(atom, []):
                if (name, d) in seen:
                    continue
                seen.add((name, d))
                lay = resolved[name][d]
                shared = len(axes) == 2 and all(axes[1] not in seg for seg in lay)
                out.append(Member(name, d, slots[name].role, shared))
        return tuple(out)

    def add(axes: tuple[int, ...], kind: str) -> None:
        members = members_of(axes)
        if not members:
            return
        frozen: list[str] = []
        for a in axes:
            for r in table.info(a).frozen:
                if r not in frozen:
                    frozen.append(r)
            if a in ignored_atoms and "ignored by the user" not in frozen:
                frozen.append("ignored by the user")
        size = prod(table.size(a) for a in axes)
        if size <= 1 or NOT_A_WIDTH in frozen:
            return
        per_unit = 0
        for m in members:
            if not m.shared:
                shape = slots[m.name].shape
                per_unit += prod(shape) // shape[m.dim] * _occurrences(table, resolved[m.name][m.dim], axes)
        groups.append(Group(id=len(groups), kind=kind, size=size, axes=axes, members=members,
                            frozen=tuple(frozen), blocks=table.size(axes[0]) if len(axes) == 2 else 1,
                            params_per_unit=per_unit))

    for kv, rep in compounds:
        add((kv, rep), "heads")
    for atom in atom_members:
        if atom in used or table.size(atom) <= 1:
            continue
        add((atom,), _classify(table.info(atom).tags))
    return groups


def _occurrences(table: AxisTable, layout: Layout, axes: Sequence[int]) -> int:
    """How many positions of a dim belong to one unit of the group (e.g. head_dim rows per head)."""
    coords = unit_coords(table, layout, axes)
    if coords.size == 0 or coords.max() < 0:
        return 0
    return int((coords == coords.max()).sum())


def analyze_graph(
    gm: fx.GraphModule,
    *,
    keep_interface: bool = True,
    ignore: Sequence[str] = (),
) -> Analysis:
    """Find the coupled channel groups of a traced graph module (see :func:`prunec.trace`)."""
    start = time.perf_counter()
    gm.graph.eliminate_dead_code()
    gm.recompile()
    ctx = AnalysisContext(graph=gm.graph)
    slots: dict[str, Slot] = {}
    aliases: dict[str, list[str]] = {}
    _walk(ctx, gm, keep_interface, slots, aliases)
    groups = _build_groups(ctx, slots, ignore)
    return Analysis(graph_module=gm, groups=groups, table=ctx.table, context=ctx, slots=slots,
                    aliases=aliases, seconds=time.perf_counter() - start)
