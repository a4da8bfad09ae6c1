"""Convolutions (plain, grouped, depthwise, transposed) and spatial pooling.

For ``groups = g`` the channel dimension of input and output is the product
``(g, channels_per_group)``: the group axis couples input and output channels
(depthwise conv ties them one to one), the per-group axes couple with the
weight's dimensions.  Spatial dimensions are never pruned.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule

aten = torch.ops.aten

SPATIAL = "spatial extent of a convolution or pooling window"


def _conv_args(node: fx.Node) -> tuple[fx.Node, fx.Node, object, int, bool]:
    """(input, weight, bias, groups, transposed) for every convolution overload."""
    args = list(node.args)
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else node.kwargs.get("bias")
    if node.target == aten.convolution.default:
        return x, w, b, int(args[8]), bool(args[6])
    name = node.target.overloadpacket.__name__
    transposed = "transpose" in name
    # conv{1,2,3}d(x, w, b, stride, padding, dilation, groups);
    # conv_transpose{1,2,3}d(x, w, b, stride, padding, output_padding, groups, dilation).
    gi = 6
    groups = args[gi] if len(args) > gi else node.kwargs.get("groups", 1)
    return x, w, b, int(groups), transposed


def _rewrite_groups(rw, node: fx.Node) -> None:
    g_axis = rw.note(node, "groups_axis")
    if g_axis is None:
        return
    new_g = rw.new_axis_size(g_axis)
    args = list(node.args)
    if node.target == aten.convolution.default:
        args[8] = new_g
    else:
        while len(args) <= 6:
            args.append(_DEFAULTS[node.target.overloadpacket.__name__][len(args)])
        args[6] = new_g
    node.args = tuple(args)


# Positional defaults, needed when a trailing ``groups`` must be written explicitly.
_CONV_DEFAULTS = [None, None, None, [1], [0], [1], 1]
_CONVT_DEFAULTS = [None, None, None, [1], [0], [0], 1, [1]]
_DEFAULTS = {"conv1d": _CONV_DEFAULTS, "conv2d": _CONV_DEFAULTS, "conv3d": _CONV_DEFAULTS,
             "conv_transpose1d": _CONVT_DEFAULTS, "conv_transpose2d": _CONVT_DEFAULTS,
             "conv_transpose3d": _CONVT_DEFAULTS}


@register_rule(aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution, aten.conv_transpose1d,
               aten.conv_transpose2d, aten.conv_transpose3d, rewrite=_rewrite_groups)
def convolution(ctx: AnalysisContext, node: fx.Node) -> None:
    x, w, b, groups, transposed = _conv_args(node)
    xd, wd = ctx.dims(x), ctx.dims(w)
    # Weight layout: [out, in/g, k...] (plain) or [in, out/g, k...] (transposed).
    w_in, w_out_g = (0, 1) if transposed else (1, 0)
    for k in wd[2:]:
        ctx.freeze(k, "convolution kernel size")
    for s in xd[2:]:
        ctx.freeze(s, SPATIAL)
    if groups == 1:
        ctx.unify(xd[1], wd[w_in], "convolution input channels")
        out_ch = wd[w_out_g] if not transposed else wd[1]
    else:
        g_axis = ctx.table.new(groups)
        per_group_in = wd[1] if not transposed else None
        if transposed:
            # [in, out/g]: input channels are wd[0] = (g, in/g); output (g, out/g).
            in_per_g = ctx.table.new(ctx.shape(w)[0] // groups)
            ctx.unify(wd[0], ((g_axis, in_per_g),), "grouped transposed conv weight")
            ctx.unify(xd[1], ((g_axis, in_per_g),), "grouped transposed conv input")
            out_ch = ctx.table.resolve(((g_axis,) + _atoms(ctx, wd[1]),))
        else:
            ctx.unify(xd[1], ((g_axis,) + _atoms(ctx, per_group_in),), "grouped conv input channels")
            out_per_g = ctx.table.new(ctx.shape(w)[0] // groups) if ctx.shape(w)[0] // groups > 1 else None
            target = ((g_axis,) + ((out_per_g,) if out_per_g is not None else ()),)
            out_ch = ctx.unify(wd[0], target, "grouped conv output channels")
        ctx.note(node, groups_axis=g_axis)
    if ctx.is_tensor(b):
        out_ch = ctx.unify(out_ch, ctx.dim(b, 0), "convolution bias")
    out = [xd[0], out_ch]
    for s in ctx.shape(node)[2:]:
        lay = ctx.table.layout_for_size(s)
        ctx.freeze(lay, SPATIAL)
        out.append(lay)
    ctx.set(node, out)


def _atoms(ctx: AnalysisContext, layout) -> tuple[int, ...]:
    resolved = ctx.table.resolve(layout)
    return resolved[0] if len(resolved) == 1 else ()


POOLS = {
    aten.max_pool1d: 1, aten.max_pool2d: 2, aten.max_pool3d: 3,
    aten.avg_pool1d: 1, aten.avg_pool2d: 2, aten.avg_pool3d: 3,
    aten.adaptive_avg_pool1d: 1, aten.adaptive_avg_pool2d: 2, aten.adaptive_avg_pool3d: 3,
    aten.adaptive_max_pool1d: 1, aten.adaptive_max_pool2d: 2, aten.adaptive_max_pool3d: 3,
    aten.max_pool2d_with_indices: 2, aten.upsample_nearest2d: 2, aten.upsample_bilinear2d: 2,
}


@register_rule(*POOLS)
def pooling(ctx: AnalysisContext, node: fx.Node) -> None:
    """Per-channel spatial ops: leading dims pass through, spatial dims are fresh and frozen."""
    x = node.args[0]
    n_spatial = POOLS[node.target.overloadpacket]
    xd = ctx.dims(x)
    for s in xd[-n_spatial:]:
        ctx.freeze(s, SPATIAL)

    def out_for(val) -> list:
        lead = xd[: len(xd) - n_spatial]
        spatial = []
        for s in val.shape[len(lead):]:
            lay = ctx.table.layout_for_size(int(s))
            ctx.freeze(lay, SPATIAL)
            spatial.append(lay)
        return lead + spatial

    val = node.meta["val"]
    if isinstance(val, (list, tuple)):
        ctx.layouts[node] = [out_for(v) for v in val]
    else:
        ctx.set(node, out_for(val))


@register_rule(aten.constant_pad_nd, aten.pad, aten.reflection_pad1d, aten.reflection_pad2d,
               aten.replication_pad1d, aten.replication_pad2d)
def pad(ctx: AnalysisContext, node: fx.Node) -> None:
    """Padding: the padded (trailing) dims are frozen, the others pass through."""
    x, amounts = node.args[0], node.args[1]
    xd = ctx.dims(x)
    n_padded = len(amounts) // 2
    out = list(xd)
    for k in range(1, n_padded + 1):
        if amounts[2 * (k - 1)] == 0 and amounts[2 * (k - 1) + 1] == 0:
            continue
        ctx.freeze(xd[-k], "padded dim")
        out[-k] = ctx.table.layout_for_size(ctx.shape(node)[-k])
        ctx.freeze(out[-k], "padded dim")
    ctx.set(node, out)
