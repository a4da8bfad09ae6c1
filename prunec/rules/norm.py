"""Normalisation layers: batch, layer, group and RMS norm; weight normalisation.

Per-channel affine parameters and running statistics couple with the channel
dimension.  Norms whose statistics run over a prunable width (layer/RMS norm
over the hidden size) are rewritten after pruning to divide by the *original*
width, which keeps removal of all-zero channels exact (see ``rewrite_layer_norm``).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules._common import freeze_where_not_zero
from prunec.rules.registry import register_rule

aten = torch.ops.aten


def _couple_params(ctx: AnalysisContext, channel, params, why: str):
    for p in params:
        if ctx.is_tensor(p):
            channel = ctx.unify(channel, ctx.dim(p, 0), why)
    return channel


@register_rule(aten.batch_norm, aten._native_batch_norm_legit_no_training, aten.instance_norm)
def batch_norm(ctx: AnalysisContext, node: fx.Node) -> None:
    x = node.args[0]
    xd = ctx.dims(x)
    ch = _couple_params(ctx, xd[1], node.args[1:5], "batch norm parameters")
    _set_with_saved_stats(ctx, node, [xd[0], ch] + xd[2:], "batch norm saved statistics")


def _set_with_saved_stats(ctx: AnalysisContext, node: fx.Node, out: list, what: str) -> None:
    """Set the output layouts; ``native_*`` variants also return statistics, which are frozen."""
    if isinstance(node.meta["val"], (list, tuple)):
        rest = [ctx.fresh_for(v) for v in node.meta["val"][1:]]
        for r in rest:
            ctx.freeze_value_layouts(r, what)
        ctx.layouts[node] = [out] + rest
    else:
        ctx.set(node, out)


def rewrite_layer_norm(rw, node: fx.Node) -> None:
    """If the normalised dims shrank, compute the statistics over the original width."""
    n_dims = len(node.args[1])
    old = 1
    new = 1
    for d in range(-n_dims, 0):
        old *= rw.old_size(node.args[0], d)
        new *= rw.new_size(node.args[0], d)
    if old == new:
        return
    rw.replace_with_original_width_norm(node, n_dims, old)


@register_rule(aten.layer_norm, aten.native_layer_norm, aten.rms_norm, rewrite=rewrite_layer_norm)
def layer_norm(ctx: AnalysisContext, node: fx.Node) -> None:
    x, shape = node.args[0], node.args[1]
    w = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
    b = node.args[3] if len(node.args) > 3 and node.target.overloadpacket != aten.rms_norm else None
    xd = ctx.dims(x)
    k = len(shape)
    for i in range(1, k + 1):
        for p in (w, b):
            if ctx.is_tensor(p):
                xd[-i] = ctx.unify(xd[-i], ctx.dim(p, -i), "norm parameters")
        if node.target.overloadpacket is aten.native_layer_norm:
            # Its mean/rstd outputs would change meaning; the rewrite handles only layer_norm.
            ctx.freeze(xd[-i], "native_layer_norm statistics over this dim")
        freeze_where_not_zero(ctx, x, xd[-i], "norm")
    _set_with_saved_stats(ctx, node, xd, "layer norm saved statistics")


def _rewrite_group_norm(rw, node: fx.Node) -> None:
    g_axis = rw.note(node, "groups_axis")
    args = list(node.args)
    args[1] = rw.new_axis_size(g_axis)
    node.args = tuple(args)


@register_rule(aten.group_norm, rewrite=_rewrite_group_norm)
def group_norm(ctx: AnalysisContext, node: fx.Node) -> None:
    x, groups = node.args[0], int(node.args[1])
    xd = ctx.dims(x)
    channels = ctx.shape(x)[1]
    g_axis = ctx.table.new(groups)
    per_group = ctx.table.layout_for_size(channels // groups)
    ctx.freeze(per_group, "group norm statistics run over the channels within a group")
    per_atoms = ctx.table.resolve(per_group)[0]
    ch = ctx.unify(xd[1], ((g_axis,) + per_atoms,), "group norm channels")
    ch = _couple_params(ctx, ch, node.args[2:4], "group norm parameters")
    ctx.note(node, groups_axis=g_axis)
    ctx.set(node, [xd[0], ch] + xd[2:])


@register_rule(aten._weight_norm, aten._weight_norm_interface)
def weight_norm(ctx: AnalysisContext, node: fx.Node) -> None:
    """``w = g * v / ||v||`` (norm over every dim but ``dim``): ``w`` has ``v``'s dims, ``g`` scales ``dim``.

    One unit of ``dim`` is a slice of ``v`` and its magnitude ``g``: its norm involves no other unit,
    so removing it leaves every other slice of ``w`` unchanged.  Along the normed dims, a removed unit
    whose ``v`` entries are zero adds nothing to the norm, so removing dead units there is exact too
    (removing a live one renormalises the rest, as pruning any weight changes the model).
    """
    v, g = node.args[0], node.args[1]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    vd, gd = ctx.dims(v), ctx.dims(g)
    out = list(vd)
    if dim is not None and dim != -1 and len(gd) == len(vd):  # dim -1: one norm over the whole tensor
        dim %= len(vd)
        out[dim] = ctx.unify(vd[dim], gd[dim], "weight_norm magnitude")
    for d, lay in enumerate(vd):
        if d != dim:
            freeze_where_not_zero(ctx, v, lay, "weight_norm")
    if isinstance(node.meta["val"], (list, tuple)):  # _weight_norm_interface also returns the norms (g's shape)
        ctx.layouts[node] = [[ctx.table.resolve(d) for d in out], ctx.dims(g)]
    else:
        ctx.set(node, out)
