"""Do removed units stay zero?  The soundness condition of original-width statistics.

Pruning a unit is exact when the unit is dead: every weight it owns or reads is zero.
Most ops keep a dead unit's values at zero (a linear layer's zeroed row and bias,
``relu(0) = 0``, ``0 * y = 0``), and readers ignore them.  A few ops do not: a term
broadcast along the unit's axis (a bias of a layer applied across another axis,
``x - x.mean(-1, keepdim=True)``, ``x + 1``) makes a dead unit's values non-zero.  That
only matters where something *parameter-free* reads every index of the axis: the
statistics of a layer/RMS norm and ``sum``/``mean`` over it.  Their rules ask
:func:`stays_zero` and freeze the axis when the answer is no.

The check walks the producers of a value back through the graph (memoised per
context); an op it does not know counts as "may be non-zero", so the answer errs
towards freezing, never towards a wrong model.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

aten = torch.ops.aten

# f(0) = 0, elementwise in their first tensor argument, or moving values without computing.
_ZERO_PRESERVING = {
    aten.relu, aten.relu_, aten.gelu, aten.silu, aten.silu_, aten.tanh, aten.hardtanh, aten.hardtanh_,
    aten.hardswish, aten.hardswish_, aten.leaky_relu, aten.elu, aten.mish, aten.relu6, aten.erf, aten.neg,
    aten.sqrt, aten.abs, aten.square, aten.sin, aten.sign, aten.clone, aten.contiguous, aten.alias, aten.detach,
    aten.lift_fresh_copy, aten._to_copy, aten.to, aten.type_as, aten.dropout, aten.dropout_, aten.feature_dropout,
    aten.view, aten.reshape, aten._unsafe_view, aten.reshape_as, aten.view_as, aten.flatten, aten.unflatten, aten.permute, aten.transpose,
    aten.swapaxes, aten.t, aten.numpy_T, aten.mT, aten.unsqueeze, aten.squeeze, aten.expand, aten.broadcast_to,
    aten.slice, aten.select, aten.split, aten.split_with_sizes, aten.chunk, aten.unbind, aten.tensor_split,
    aten.cat, aten.concat, aten.stack, aten.sum, aten.mean, aten.constant_pad_nd, aten.pixel_shuffle,
    aten.max_pool1d, aten.max_pool2d, aten.avg_pool1d, aten.avg_pool2d, aten.adaptive_avg_pool1d,
    aten.adaptive_avg_pool2d, aten.adaptive_max_pool2d, aten.repeat, aten.index, aten.index_select, aten.gather,
    aten.roll, aten.flip, aten.pad, aten.upsample_nearest2d, aten.upsample_bilinear2d, aten.linalg_vector_norm,
    aten.amax, aten.amin, aten.repeat_interleave, aten.clamp, aten.clamp_min, aten.clamp_max,
}
# The result is zero where any operand carrying the axis is zero.
_PRODUCTS = {aten.mul, aten.mul_, aten.bmm, aten.matmul, aten.mm, aten.baddbmm}
# Zero where the first operand is.
_NUMERATOR = {aten.div, aten.div_}
# Sums: every operand must carry the axis and be zero there (a broadcast operand adds to dead units).
_SUMS = {aten.add, aten.add_, aten.sub, aten.sub_}
# Affine layers: the output features are the weight's rows (zeroed with the unit, bias too).
_LAYERS = {aten.linear, aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution}
_NORMS = {aten.layer_norm, aten.rms_norm, aten.batch_norm, aten._native_batch_norm_legit_no_training,
          aten.group_norm, aten.native_layer_norm}


def stays_zero(ctx: Any, node: Any, atom: int) -> bool:
    """Is ``node``'s value zero at the indices of ``atom`` whenever those units are dead?"""
    return _check(ctx, node, atom, ctx.zero_memo)


def _atoms(ctx: Any, node: Any) -> set[int]:
    if not isinstance(node, fx.Node) or not ctx.is_tensor(node) or not isinstance(ctx.layouts.get(node), list):
        return set()
    return {a for d in ctx.dims(node) for a in ctx.table.atoms(d)}


def _carriers(ctx: Any, node: fx.Node, atom: int) -> list[fx.Node]:
    return [a for a in ctx.tensor_args(node) if atom in _atoms(ctx, a)]


def _check(ctx: Any, node: Any, atom: int, memo: dict) -> bool:
    if not isinstance(node, fx.Node):
        return False
    key = (node, atom)
    if key not in memo:
        memo[key] = False  # cycles cannot happen in a DAG; this guards re-entry only
        memo[key] = _decide(ctx, node, atom, memo)
    return memo[key]


def _decide(ctx: Any, node: fx.Node, atom: int, memo: dict) -> bool:
    if node.op == "get_attr":
        return True  # a member slice of the unit: zeroed with it
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:
        return _check(ctx, node.args[0], atom, memo)
    packet = getattr(node.target, "overloadpacket", None)
    carriers = _carriers(ctx, node, atom)
    if packet in _LAYERS:
        w = node.args[1]
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        if isinstance(w, fx.Node) and atom in set(ctx.table.atoms(ctx.dim(w, 0))):
            return True  # output features: zeroed rows and bias
        # The axis is a batch dim of the input: the layer's bias (if any) is added to it.
        x = node.args[0]
        return bias is None and atom in _atoms(ctx, x) and _check(ctx, x, atom, memo)
    if packet is aten.addmm:  # bias + a @ b (GPT-2's Conv1D)
        bias, a, b = node.args[0], node.args[1], node.args[2]
        if atom in set(ctx.table.atoms(ctx.dim(b, 1))):
            return atom in _atoms(ctx, bias)  # output features: zeroed columns and bias
        return atom in _atoms(ctx, bias) and atom in _atoms(ctx, a) and _check(ctx, a, atom, memo)
    if packet in _NORMS:
        # Affine norms multiply by a zeroed weight and add a zeroed bias along the normalised/channel dim.
        weight = node.args[2] if packet in (aten.layer_norm, aten.rms_norm, aten.group_norm,
                                            aten.native_layer_norm) else node.args[1]
        return isinstance(weight, fx.Node) and atom in _atoms(ctx, weight)
    if packet is aten.embedding:
        return True
    if packet is aten.scaled_dot_product_attention:
        v = node.args[2]
        return atom in _atoms(ctx, v) and _check(ctx, v, atom, memo)
    if not carriers:
        return False
    if packet in _ZERO_PRESERVING:
        return all(_check(ctx, a, atom, memo) for a in carriers)
    if packet in _PRODUCTS:
        return any(_check(ctx, a, atom, memo) for a in carriers)
    if packet is aten.pow and isinstance(node.args[1], (int, float)) and node.args[1] > 0:
        return _check(ctx, node.args[0], atom, memo)  # 0 ** p = 0 for p > 0
    if packet in _NUMERATOR:
        first = node.args[0]
        return first in carriers and _check(ctx, first, atom, memo)
    if packet in _SUMS:
        operands = [a for a in node.args[:2]]
        if any(not isinstance(a, fx.Node) and a != 0 for a in operands):
            return False  # x + c
        tensors = [a for a in operands if isinstance(a, fx.Node)]
        return all(a in carriers and _check(ctx, a, atom, memo) for a in tensors)
    return False

