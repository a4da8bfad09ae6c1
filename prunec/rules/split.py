"""Splitting and indexing along a dimension: split, chunk, slice, unbind, select, getitem.

A split cuts the input dimension's layout at the split offsets (refining axes
into concatenated segments where needed); each output takes its segments.
After pruning, the split sizes and slice bounds are recomputed from the new
segment widths, which is what lets unevenly pruned chunks (YOLO C2f) survive.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from prunec.analysis.axes import Layout, LayoutMismatch
from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule
from prunec.shapes import size_hint

aten = torch.ops.aten


def _take(ctx: AnalysisContext, layout: Layout, start: int, end: int) -> Layout:
    """The segments of ``layout`` covering ``[start, end)`` (boundaries must exist)."""
    out, off = [], 0
    for seg in ctx.table.resolve(layout):
        size = ctx.table.layout_size((seg,))
        if off >= start and off + size <= end:
            out.append(seg)
        off += size
    if not out and end - start == 1:
        return ((),)
    return tuple(out)


def _split_outputs(ctx: AnalysisContext, node: fx.Node, x: fx.Node, dim: int, sizes: list[int]) -> None:
    xd = ctx.dims(x)
    dim %= len(xd)
    offsets, off = [], 0
    for s in sizes:
        offsets.append((off, off + s))
        off += s
    outs = []
    try:
        cut = ctx.table.cut(xd[dim], [b for _, b in offsets[:-1]])
        pieces = [_take(ctx, cut, a, b) for a, b in offsets]
        ctx.note(node, split_dim=dim)
    except LayoutMismatch as exc:
        ctx.freeze(xd[dim], f"{node.target}: {exc}")
        pieces = []
        for a, b in offsets:
            lay = ctx.table.layout_for_size(b - a)
            ctx.freeze(lay, f"{node.target}: {exc}")
            pieces.append(lay)
        ctx.note(node, split_frozen=True)
    for piece in pieces:
        dims = list(ctx.dims(x))
        dims[dim] = piece
        outs.append([ctx.table.resolve(d) for d in dims])
    ctx.layouts[node] = outs


def _rewrite_split(rw, node: fx.Node) -> None:
    dim = rw.note(node, "split_dim")
    if dim is None:
        return
    kept = rw.kept_indices(node.args[0], dim)
    if kept is None:
        return
    new, off = [], 0
    for v in node.meta["val"]:
        size = size_hint(v.shape[dim])
        new.append(int(((kept >= off) & (kept < off + size)).sum()))
        off += size
    node.target = aten.split_with_sizes.default
    node.args = (node.args[0], new, dim)
    node.kwargs = {}


@register_rule(aten.split, aten.split_with_sizes, aten.chunk, aten.tensor_split, rewrite=_rewrite_split)
def split(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    sizes = [size_hint(v.shape[dim]) for v in node.meta["val"]]
    _split_outputs(ctx, node, x, dim, sizes)


@register_rule(aten.unbind)
def unbind(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else 0
    xd = ctx.dims(x)
    ctx.freeze(xd[dim], "unbind addresses fixed indices")
    rest = xd[:dim] + xd[dim + 1 :] if dim != -1 else xd[:-1]
    ctx.layouts[node] = [list(rest) for _ in node.meta["val"]]


@register_rule(aten.select)
def select(ctx: AnalysisContext, node: fx.Node) -> None:
    x, dim = node.args[0], node.args[1]
    xd = ctx.dims(x)
    dim %= len(xd)
    ctx.freeze(xd[dim], "select addresses a fixed index")
    ctx.set(node, xd[:dim] + xd[dim + 1 :])


def _rewrite_slice(rw, node: fx.Node) -> None:
    bounds = rw.note(node, "slice_bounds")
    if bounds is None:
        return
    dim, start, end = bounds
    kept = rw.kept_indices(node.args[0], dim)
    if kept is None:
        return
    args = list(node.args) + [None] * (4 - len(node.args))
    args[1], args[2], args[3] = dim, int((kept < start).sum()), int((kept < end).sum())
    node.args = tuple(args[:4]) + tuple(node.args[4:])


@register_rule(aten.slice, rewrite=_rewrite_slice)
def slice_(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else 0
    start = node.args[2] if len(node.args) > 2 else None
    end = node.args[3] if len(node.args) > 3 else None
    step = node.args[4] if len(node.args) > 4 else 1
    xd = ctx.dims(x)
    dim %= len(xd)
    n = ctx.shape(x)[dim]
    # Bounds read from a symbolic size (a dynamic length) are graph nodes: left as they are, frozen below.
    start = 0 if start is None else (start + n if start < 0 else min(start, n)) if isinstance(start, int) else start
    end = n if end is None else (end + n if end < 0 else min(end, n)) if isinstance(end, int) else end
    if step != 1 or not isinstance(start, int) or not isinstance(end, int):
        ctx.freeze(xd[dim], "strided or symbolic slice")
        out = list(xd)
        out[dim] = ctx.table.layout_for_size(ctx.shape(node)[dim])
        ctx.freeze(out[dim], "strided or symbolic slice")
        ctx.set(node, out)
        return
    out = list(xd)
    if (start, end) == (0, n):
        ctx.set(node, out)
        return
    try:
        cut = ctx.table.cut(xd[dim], [start, end])
        out[dim] = _take(ctx, cut, start, end)
        ctx.note(node, slice_bounds=(dim, start, end))
    except LayoutMismatch as exc:
        ctx.freeze(xd[dim], f"slice: {exc}")
        out[dim] = ctx.table.layout_for_size(end - start)
        ctx.freeze(out[dim], f"slice: {exc}")
    ctx.set(node, out)


@register_rule(operator.getitem)
def getitem(ctx: AnalysisContext, node: fx.Node) -> None:
    src, idx = node.args[0], node.args[1]
    lay = ctx.layouts.get(src)
    if isinstance(lay, list) and isinstance(idx, int) and lay and isinstance(lay[idx], list):
        ctx.layouts[node] = lay[idx]
        return
    ctx.layouts[node] = ctx.fresh_for(node.meta.get("val"))
    ctx.freeze_value(src, "indexing with a non-constant key")
    ctx.freeze_value(node, "indexing with a non-constant key")
