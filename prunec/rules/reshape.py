"""Reshapes, broadcasts and dimension shuffles: view, reshape(_as), flatten, unflatten, permute, transpose,
(un)squeeze, expand, repeat/tile, meshgrid.

Merging dims forms a product of their layouts; splitting a dim refines its axis
into a product (``hidden -> heads x head_dim``).  Constant sizes in the op's
arguments are rewritten after pruning from the new widths of the output dims.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules._common import reshape_dims
from prunec.rules.registry import register_rule

aten = torch.ops.aten


def rescale_symbolic(rw, node: fx.Node, size: fx.Node, old: int, new: int) -> fx.Node:
    """``size * new // old`` as graph values: a symbolic size (``batch * heads``) whose fixed factor was pruned.

    ``old``/``new`` are the dim's sizes in the example; the symbolic factors are never pruned, so
    the ratio is the fixed factors' ratio and the result is exact for every batch/length."""
    g = math.gcd(old, new)
    with rw.graph.inserting_before(node):
        scaled = rw.graph.call_function(operator.mul, (size, new // g))
        return rw.graph.call_function(operator.floordiv, (scaled, old // g))


def rewrite_size_list(rw, node: fx.Node, arg_index: int = 1) -> None:
    """Rewrite a size-list argument that spells out the output shape (``-1`` stays ``-1``).

    A symbolic entry (a graph value) stays symbolic; it is rescaled only where its dim lost units."""
    args = list(node.args)
    if len(args) <= arg_index:
        return
    sizes = list(args[arg_index])
    for i, s in enumerate(sizes):
        d = i - len(sizes) + len(rw.old_shape(node))
        if isinstance(s, int) and s != -1:
            sizes[i] = rw.new_size(node, d)
        elif isinstance(s, fx.Node) and rw.new_size(node, d) != rw.old_size(node, d):
            sizes[i] = rescale_symbolic(rw, node, s, rw.old_size(node, d), rw.new_size(node, d))
    args[arg_index] = sizes
    node.args = tuple(args)


@register_rule(aten.view, aten.reshape, aten._unsafe_view, rewrite=rewrite_size_list)
def view(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    ctx.set(node, reshape_dims(ctx, ctx.dims(x), ctx.shape(x), ctx.shape(node), f"{node.target}"))


@register_rule(aten.reshape_as, aten.view_as)
def reshape_as(ctx: AnalysisContext, node: fx.Node) -> None:
    """``x.reshape_as(other)`` is ``x.reshape(other.shape)``; the output also has ``other``'s layouts.

    LeViT runs ``BatchNorm1d`` on ``linear(x).flatten(0, 1)`` and reshapes back with
    ``reshape_as(linear(x))``: the channel dims of both sides are the same width.  No rewrite is
    needed, the size comes from ``other`` at run time (and ``other``'s dims are coupled here).
    """
    x, other = node.args[0], node.args[1]
    why = f"{node.target}"
    dims = reshape_dims(ctx, ctx.dims(x), ctx.shape(x), ctx.shape(node), why)
    # The result has exactly other's shape, so its dims are other's: unify the two views of them.
    ctx.set(node, [ctx.unify(d, o, why) for d, o in zip(dims, ctx.dims(other))])


def _rewrite_unflatten(rw, node: fx.Node) -> None:
    dim = node.args[1] % len(rw.old_shape(node.args[0]))
    sizes = []
    for i, s in enumerate(node.args[2]):
        old, new = rw.old_size(node, dim + i), rw.new_size(node, dim + i)
        if isinstance(s, fx.Node):  # symbolic: kept, rescaled only where the dim lost units
            s = s if old == new else rescale_symbolic(rw, node, s, old, new)
        sizes.append(s if s == -1 or isinstance(s, fx.Node) else new)
    node.args = (node.args[0], node.args[1], sizes)


@register_rule(aten.flatten)
def flatten(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    ctx.set(node, reshape_dims(ctx, ctx.dims(x), ctx.shape(x), ctx.shape(node), f"{node.target}"))


# unflatten carries sizes and needs a rewrite; flatten does not.
register_rule(aten.unflatten, rewrite=_rewrite_unflatten)(flatten)


@register_rule(aten.permute)
def permute(ctx: AnalysisContext, node: fx.Node) -> None:
    xd = ctx.dims(node.args[0])
    ctx.set(node, [xd[d % len(xd)] for d in node.args[1]])


@register_rule(aten.transpose, aten.swapaxes, aten.swapdims)
def transpose(ctx: AnalysisContext, node: fx.Node) -> None:
    xd = list(ctx.dims(node.args[0]))
    if xd:
        a, b = node.args[1] % len(xd), node.args[2] % len(xd)
        xd[a], xd[b] = xd[b], xd[a]
    ctx.set(node, xd)


@register_rule(aten.t, aten.numpy_T)
def t(ctx: AnalysisContext, node: fx.Node) -> None:
    ctx.set(node, list(reversed(ctx.dims(node.args[0]))))


@register_rule(aten.unsqueeze, aten.squeeze)
def squeeze_unsqueeze(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    # Both only add or drop size-1 dims: match the non-unit dims in order.
    ctx.set(node, reshape_dims(ctx, ctx.dims(x), ctx.shape(x), ctx.shape(node), f"{node.target}"))


def _rewrite_expand(rw, node: fx.Node) -> None:
    rewrite_size_list(rw, node, 1)


@register_rule(aten.expand, aten.broadcast_to, rewrite=_rewrite_expand)
def expand(ctx: AnalysisContext, node: fx.Node) -> None:
    """Broadcast to a size: expanded dims get fresh axes whose size the rewrite can shrink."""
    x = node.args[0]
    xs, xd = ctx.shape(x), ctx.dims(x)
    out_shape = ctx.shape(node)
    off = len(out_shape) - len(xs)
    out = []
    for i, size in enumerate(out_shape):
        j = i - off
        if j >= 0 and xs[j] == size:
            out.append(xd[j])
        else:
            out.append(ctx.table.layout_for_size(size))
    ctx.set(node, out)


@register_rule(aten.expand_as)
def expand_as(ctx: AnalysisContext, node: fx.Node) -> None:
    x, other = node.args[0], node.args[1]
    xs, xd = ctx.shape(x), ctx.dims(x)
    od = ctx.dims(other)
    off = len(od) - len(xs)
    out = list(od)
    for j, size in enumerate(xs):
        if size != 1:
            out[off + j] = ctx.unify(od[off + j], xd[j], "expand_as")
    ctx.set(node, out)


@register_rule(aten.repeat, aten.tile)
def repeat(ctx: AnalysisContext, node: fx.Node) -> None:
    """Tiling: each repeated dim becomes ``(copies, original)``; the copy count is frozen."""
    x, reps = node.args[0], list(node.args[1])
    xd = ctx.dims(x)
    # ``tile`` pads short ``reps`` with leading 1s; ``repeat`` requires len(reps) >= x.dim().
    reps = [1] * (len(xd) - len(reps)) + reps
    off = len(reps) - len(xd)
    out = []
    for i, r in enumerate(reps):
        j = i - off
        base = xd[j] if j >= 0 else ((),)
        if r == 1:
            out.append(base)
            continue
        copies = ctx.table.new(r)
        ctx.freeze(((copies,),), "repeat count")
        resolved = ctx.table.resolve(base)
        if len(resolved) == 1:
            out.append(((copies,) + resolved[0],))
        else:
            lay = ctx.table.layout_for_size(ctx.shape(node)[i])
            ctx.freeze(lay, "repeat of a concatenated dim")
            ctx.freeze(base, "repeat of a concatenated dim")
            out.append(lay)
    ctx.set(node, out)


@register_rule(aten.meshgrid)
def meshgrid(ctx: AnalysisContext, node: fx.Node) -> None:
    """N 1-D tensors -> N grids whose dim ``j`` is input ``j`` broadcast (``xy`` swaps the first two)."""
    tensors = list(node.args[0])
    indexing = node.args[1] if len(node.args) > 1 else node.kwargs.get("indexing", "ij")
    dims = [ctx.dim(t, 0) if ctx.shape(t) else ctx.table.layout_for_size(1) for t in tensors]
    if indexing == "xy" and len(dims) > 1:
        dims[0], dims[1] = dims[1], dims[0]
    ctx.layouts[node] = [[ctx.table.resolve(d) for d in dims] for _ in tensors]
