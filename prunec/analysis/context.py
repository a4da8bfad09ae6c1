"""The state shared by op rules while the analysis walks the graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.fx as fx

from prunec.analysis.axes import UNIT, AxisTable, Layout, LayoutMismatch
from prunec.shapes import hint_shape, is_symbolic, size_hint

# Layouts of one node's output: a list of per-dimension layouts for a tensor,
# a list of such lists for a tuple/list of tensors, None for non-tensor values.
NodeLayouts = Any


@dataclass
class HeadsDecl:
    """An attention op's head dimension, declared by the attention rule."""

    node: str
    layout: Layout


@dataclass
class AnalysisContext:
    """What rules read and write: layouts of every node, the axis table, notes for rewrites."""

    graph: fx.Graph
    table: AxisTable = field(default_factory=AxisTable)
    layouts: dict[fx.Node, NodeLayouts] = field(default_factory=dict)
    heads: list[HeadsDecl] = field(default_factory=list)
    # Per-node facts that rewrites need later (e.g. which segments a slice takes).
    notes: dict[fx.Node, dict[str, Any]] = field(default_factory=dict)
    # (node name, reason) for every op that had no rule.
    unhandled: list[tuple[str, str]] = field(default_factory=list)
    # (node, atom) -> do dead units stay zero there (see prunec.analysis.zeros).
    zero_memo: dict[tuple[fx.Node, int], bool] = field(default_factory=dict)

    # -- reading -----------------------------------------------------------
    @staticmethod
    def val(node: Any) -> Any:
        return node.meta.get("val") if isinstance(node, fx.Node) else None

    def shape(self, node: Any) -> tuple[int, ...]:
        # The example's sizes: symbolic (dynamic) dims read as their traced value, without guarding them.
        return hint_shape(self.val(node).shape)

    @staticmethod
    def is_tensor(node: Any) -> bool:
        return isinstance(node, fx.Node) and isinstance(node.meta.get("val"), torch.Tensor)

    def dims(self, node: fx.Node) -> list[Layout]:
        """The layouts of a tensor node's dimensions (resolved to atomic axes)."""
        lay = self.layouts[node]
        return [self.table.resolve(d) for d in lay]

    def dim(self, node: fx.Node, d: int) -> Layout:
        dims = self.dims(node)
        return dims[d % len(dims)] if dims else UNIT

    # -- writing -----------------------------------------------------------
    def fresh_for(self, val: Any) -> NodeLayouts:
        """Fresh, independent layouts for a value (tensor, tuple of tensors, other)."""
        if isinstance(val, torch.Tensor):
            out = []
            for s in val.shape:
                lay = self.table.layout_for_size(size_hint(s))
                if is_symbolic(s):
                    # A dynamic batch/length/resolution is never a prunable width.
                    self.table.freeze(lay, "symbolic (dynamic) size")
                out.append(lay)
            return out
        if isinstance(val, (list, tuple)):
            return [self.fresh_for(v) for v in val]
        return None

    def set(self, node: fx.Node, dims: Sequence[Layout]) -> None:
        resolved = [self.table.resolve(d) for d in dims]
        for d in resolved:
            self.table.note_layout(d)
        self.layouts[node] = resolved

    def unify(self, a: Layout, b: Layout, why: str) -> Layout:
        """Couple two layouts; if that is impossible, freeze both and say why."""
        try:
            return self.table.unify(a, b)
        except LayoutMismatch as exc:
            self.table.freeze(a, f"{why}: {exc}")
            self.table.freeze(b, f"{why}: {exc}")
            return a

    def freeze(self, layout: Layout, reason: str) -> None:
        self.table.freeze(layout, reason)

    def freeze_value(self, node: Any, reason: str) -> None:
        """Freeze every dimension of a node's value (tensor or nested tuple)."""
        lay = self.layouts.get(node) if isinstance(node, fx.Node) else None
        self.freeze_value_layouts(lay, reason)

    def freeze_value_layouts(self, lay: NodeLayouts, reason: str) -> None:
        """Freeze every layout in a (nested) node-layouts value."""
        if lay is None:
            return
        for item in lay:
            if isinstance(item, list):
                self.freeze_value_layouts(item, reason)
            else:
                self.table.freeze(item, reason)

    def tag(self, layout: Layout, tag: str) -> None:
        self.table.tag(layout, tag)

    def note(self, node: fx.Node, **facts: Any) -> None:
        self.notes.setdefault(node, {}).update(facts)

    def declare_heads(self, node: fx.Node, layout: Layout) -> None:
        self.heads.append(HeadsDecl(node=node.name, layout=layout))

    # -- helpers used by many rules -------------------------------------------
    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        """Tensor-valued node arguments, flattening list arguments."""
        out = []
        for a in list(node.args) + list(node.kwargs.values()):
            items = a if isinstance(a, (list, tuple)) else [a]
            out.extend(x for x in items if self.is_tensor(x))
        return out
