"""Splitting and indexing along a dimension: split, chunk, slice, unbind, select, getitem.

A split cuts the input dimension's layout at the split offsets (refining axes
into concatenated segments where needed); each output takes its segments.
After pruning, the split sizes and slice bounds are recomputed from the new
segment widths, which is what lets unevenly pruned chunks (YOLO C2f) survive.

A strided slice ``x[a + phase :: step]`` over a region ``[a, a + m * step)`` refines that
region into the product ``(m, step)``: output unit ``u`` is position ``a + u * step + phase``.
The ``step`` axis (the position within each stride) is frozen, so a removed unit takes its whole
stride with it: gpt-oss's interleaved ``gate_up[..., ::2]`` / ``gate_up[..., 1::2]`` lose gate
and up column ``u`` together, and the slices keep working on the shorter dim.
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
    strided = rw.note(node, "strided_slice")
    if strided is not None:
        _rewrite_strided(rw, node, *strided)
        return
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
    if not all(isinstance(v, int) for v in (start, end, step)):
        _frozen_slice(ctx, node, xd, dim, "slice with symbolic bounds or step")
        return
    if step != 1:
        _strided_slice(ctx, node, xd, dim, n, start, end, step)
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


def _frozen_slice(ctx: AnalysisContext, node: fx.Node, xd: list[Layout], dim: int, reason: str) -> None:
    ctx.freeze(xd[dim], reason)
    out = list(xd)
    out[dim] = ctx.table.layout_for_size(ctx.shape(node)[dim])
    ctx.freeze(out[dim], reason)
    ctx.set(node, out)


def _strided_slice(ctx: AnalysisContext, node: fx.Node, xd: list[Layout], dim: int, n: int,
                   start: int, end: int, step: int) -> None:
    """``x[start:end:step]``: refine the region it strides over into ``(units, step)``."""
    m = len(range(start, end, step))
    # The strides are aligned to multiples of ``step`` where they fit (an interleaved fused weight
    # is laid out that way from position 0), else they start at ``start``.
    phase = start % step
    if start - phase + m * step > n:
        phase = 0
    a, b = start - phase, start - phase + m * step
    if m == 0 or b > n:
        _frozen_slice(ctx, node, xd, dim, f"strided slice [{start}:{end}:{step}] does not tile a {n}-wide dim")
        return
    units, within = ctx.table.new(m), ctx.table.new(step)
    try:
        region = _take(ctx, ctx.table.cut(xd[dim], [a, b]), a, b)
        ctx.table.unify(region, ((units, within),))
    except LayoutMismatch as exc:
        _frozen_slice(ctx, node, xd, dim, f"strided slice: {exc}")
        return
    # Removing a position within the stride would shift which elements the slice picks.
    ctx.freeze(((within,),), "position within the stride of a strided slice")
    out = list(xd)
    out[dim] = ctx.table.resolve(((units,),))
    ctx.note(node, strided_slice=(dim, a, b, phase, step))
    ctx.set(node, out)


def _rewrite_strided(rw, node: fx.Node, dim: int, a: int, b: int, phase: int, step: int) -> None:
    kept = rw.kept_indices(node.args[0], dim)
    if kept is None:
        return
    # Whole strides go (their inner axis is frozen): the region shrinks by multiples of ``step``.
    new_a, new_b = int((kept < a).sum()), int((kept < b).sum())
    node.args = (node.args[0], dim, new_a + phase, new_b, step)


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
