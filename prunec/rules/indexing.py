"""Data-dependent indexing: advanced indexing, gather, scatter, index_add, top-k/sort, repeat_interleave, index_select.

The indexed dimension is addressed by runtime indices, so it is frozen; every other
dimension passes through unchanged and stays prunable.  This is what lets a
relative-position bias table (Swin, BEiT) keep its heads prunable, and an MoE's
experts (``weight[expert_ids]``) keep their FFN width prunable.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules._common import broadcast_dims, operands
from prunec.rules.registry import register_rule

aten = torch.ops.aten

ADDRESSED = "addressed by runtime indices"


@register_rule(aten.index)
def index(ctx: AnalysisContext, node: fx.Node) -> None:
    """``x[i0, i1, ...]`` with index tensors (``None`` keeps a dim whole)."""
    x, indices = node.args[0], list(node.args[1])
    xd = ctx.dims(x)
    positions = [k for k, i in enumerate(indices) if i is not None]
    idx = [indices[k] for k in positions]
    if not positions or not all(ctx.is_tensor(i) for i in idx) or any(
            ctx.val(i).dtype == torch.bool for i in idx):
        raise ValueError("boolean or non-tensor indices")
    for k in positions:
        ctx.freeze(xd[k], f"aten.index: {ADDRESSED}")
    out_shape = ctx.shape(node)
    idx_shape = torch.broadcast_shapes(*(ctx.shape(i) for i in idx))
    idx_dims = broadcast_dims(ctx, operands(ctx, idx), idx_shape, "aten.index index tensors")
    kept = [k for k in range(len(xd)) if k not in positions]
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    if adjacent:
        before = [xd[k] for k in kept if k < positions[0]]
        after = [xd[k] for k in kept if k > positions[-1]]
        out = before + idx_dims + after
    else:  # torch puts the index dims first when the indexed dims are not adjacent
        out = idx_dims + [xd[k] for k in kept]
    if len(out) != len(out_shape):
        raise ValueError("unexpected result rank")
    ctx.set(node, out)


@register_rule(aten.index_select)
def index_select(ctx: AnalysisContext, node: fx.Node) -> None:
    x, dim = node.args[0], node.args[1]
    xd = ctx.dims(x)
    dim %= len(xd)
    ctx.freeze(xd[dim], f"index_select: {ADDRESSED}")
    out = list(xd)
    out[dim] = ctx.table.layout_for_size(ctx.shape(node)[dim])
    ctx.freeze(out[dim], f"index_select: {ADDRESSED}")
    ctx.set(node, out)


@register_rule(aten.gather)
def gather(ctx: AnalysisContext, node: fx.Node) -> None:
    """``out[i][j] = x[i][index[i][j]]`` (dim 1): other dims of equal size are coupled."""
    x, dim, ix = node.args[0], node.args[1], node.args[2]
    xd, xs = ctx.dims(x), ctx.shape(x)
    ixd, ixs = ctx.dims(ix), ctx.shape(ix)
    dim %= len(xd)
    ctx.freeze(xd[dim], f"gather: {ADDRESSED}")
    out = []
    for d, size in enumerate(ixs):
        if d != dim and xs[d] == size:
            out.append(ctx.unify(xd[d], ixd[d], "gather operands"))
        else:
            if d != dim:
                ctx.freeze(xd[d], "gather reads a prefix of this dim")
            ctx.freeze(ixd[d], f"gather: {ADDRESSED}")
            out.append(ixd[d])
    ctx.set(node, out)


@register_rule(aten.scatter, aten.scatter_, aten.scatter_add, aten.scatter_add_, aten.scatter_reduce,
               aten.scatter_reduce_)
def scatter(ctx: AnalysisContext, node: fx.Node) -> None:
    """``out = x; out[i][index[i][j]] = src[i][j]`` (dim 1): ``out`` has ``x``'s dims.

    Along ``dim`` positions are written through runtime indices: ``x``'s dim and the
    index/src dim are frozen (dropping an entry would leave ``x``'s old value in place).
    Elsewhere, dims of equal size are coupled; a dim that only a prefix is written of is frozen.
    """
    x, dim, ix = node.args[0], node.args[1], node.args[2]
    src = node.args[3] if len(node.args) > 3 else node.kwargs.get("src")
    xd, xs = ctx.dims(x), ctx.shape(x)
    ixd, ixs = ctx.dims(ix), ctx.shape(ix)
    dim %= len(xd)
    ctx.freeze(xd[dim], f"{node.target.overloadpacket.__name__}: {ADDRESSED}")
    ctx.freeze(ixd[dim], f"{node.target.overloadpacket.__name__}: {ADDRESSED}")
    sources = [(ctx.dims(src), ctx.shape(src))] if ctx.is_tensor(src) else []
    for d, size in enumerate(ixs):
        for sd, ss in sources:
            if ss[d] == size:
                ctx.unify(sd[d], ixd[d], "scatter index and source")
            else:
                ctx.freeze(sd[d], "scatter reads a prefix of this dim")
        if d != dim:
            if xs[d] == size:
                ctx.unify(xd[d], ixd[d], "scatter operands")
            else:
                ctx.freeze(xd[d], "scatter writes a prefix of this dim")
                ctx.freeze(ixd[d], "scatter writes a prefix of this dim")
    ctx.set(node, ctx.dims(x))


@register_rule(aten.index_add, aten.index_add_)
def index_add(ctx: AnalysisContext, node: fx.Node) -> None:
    """``out = x; out[index[i]] += src[i]`` along ``dim``: the other dims of ``src`` are ``x``'s."""
    x, dim, ix, src = node.args[0], node.args[1], node.args[2], node.args[3]
    xd, sd = ctx.dims(x), ctx.dims(src)
    dim %= len(xd)
    why = f"{node.target.overloadpacket.__name__}: {ADDRESSED}"
    ctx.freeze(xd[dim], why)
    ctx.freeze(sd[dim], why)
    ctx.freeze_value(ix, why)
    for d in range(len(xd)):
        if d != dim:
            ctx.unify(xd[d], sd[d], "index_add operands")
    ctx.set(node, ctx.dims(x))


@register_rule(aten.topk, aten.sort)
def topk(ctx: AnalysisContext, node: fx.Node) -> None:
    """Values and indices: the sorted dim is frozen, the others pass through."""
    x = node.args[0]
    is_topk = node.target.overloadpacket is aten.topk
    dim = node.args[2] if is_topk and len(node.args) > 2 else node.args[1] if not is_topk and len(node.args) > 1 \
        and isinstance(node.args[1], int) else -1
    xd = ctx.dims(x)
    dim %= len(xd)
    ctx.freeze(xd[dim], f"{node.target.overloadpacket.__name__} ranks along this dim")
    out = list(xd)
    out[dim] = ctx.table.layout_for_size(int(node.meta["val"][0].shape[dim]))
    ctx.freeze(out[dim], "top-k / sorted positions")
    ctx.layouts[node] = [list(out), list(out)]


@register_rule(aten.repeat_interleave.self_int)
def repeat_interleave(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    if dim is None:
        raise ValueError("repeat_interleave without dim flattens")
    xd = ctx.dims(x)
    dim %= len(xd)
    ctx.freeze(xd[dim], "repeat_interleave repeats along this dim")
    out = list(xd)
    out[dim] = ctx.table.layout_for_size(ctx.shape(node)[dim])
    ctx.freeze(out[dim], "repeat_interleave repeats along this dim")
    ctx.set(node, out)
