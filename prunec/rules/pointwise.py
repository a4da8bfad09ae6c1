"""Elementwise ops with broadcasting: unary maps, binary arithmetic, casts and copies.

All non-broadcast dimensions of all tensor operands and the output are coupled
index-for-index.  An ``add``/``sub`` of two computed tensors (not parameters)
marks its axes as *residual*: the width is shared across the branches it joins.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules._common import broadcast_dims, is_activation, operands
from prunec.rules.registry import register_rule

aten = torch.ops.aten

UNARY_AND_NARY = [
    # activations
    aten.relu, aten.relu_, aten.gelu, aten.silu, aten.silu_, aten.sigmoid, aten.tanh, aten.hardtanh,
    aten.hardtanh_, aten.hardswish, aten.hardswish_, aten.hardsigmoid, aten.leaky_relu, aten.elu,
    aten.softplus, aten.mish, aten.relu6, aten.erf, aten.log_sigmoid,
    # arithmetic
    aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_, aten.div, aten.div_, aten.neg,
    aten.pow, aten.sqrt, aten.rsqrt, aten.exp, aten.log, aten.abs, aten.reciprocal, aten.square,
    aten.sin, aten.cos, aten.clamp, aten.clamp_min, aten.clamp_max, aten.maximum, aten.minimum,
    aten.where, aten.masked_fill, aten.rsub, aten.floor_divide, aten.remainder, aten.sign,
    aten.logical_not, aten.logical_and, aten.logical_or, aten.bitwise_and, aten.bitwise_or,
    aten.bitwise_not, aten.eq, aten.ne, aten.lt, aten.le, aten.gt, aten.ge, aten.isinf, aten.isnan,
    aten.__and__, aten.__or__, aten.lerp, aten.addcmul, aten.addcdiv, aten.tril, aten.triu,
    # copies, casts, no-op views
    aten.clone, aten.contiguous, aten.alias, aten.detach, aten.lift_fresh_copy, aten._to_copy,
    aten.to, aten.type_as, aten.dropout, aten.dropout_,
    aten.feature_dropout, aten.alpha_dropout, aten.zeros_like, aten.ones_like, aten.empty_like,
    aten.full_like, aten.rand_like, aten.randn_like, aten.copy, aten.fill, aten.bernoulli,
    # in-place writes (into a tensor or a slice of one): the destination's dims take the source's
    aten.copy_, aten.fill_, aten.zero_,
]

RESIDUAL_OPS = {aten.add, aten.add_, aten.sub, aten.sub_}


@register_rule(*UNARY_AND_NARY)
def pointwise(ctx: AnalysisContext, node: fx.Node) -> None:
    tensors = ctx.tensor_args(node)
    out_shape = ctx.shape(node)
    joins = _joined_dims(ctx, node, tensors, out_shape)
    dims = broadcast_dims(ctx, operands(ctx, tensors), out_shape, f"{node.target} operands")
    for i in joins:
        ctx.tag(dims[i], "residual")
    ctx.set(node, dims)


def _joined_dims(ctx: AnalysisContext, node: fx.Node, tensors: list[fx.Node], out_shape) -> list[int]:
    """Output dims where an add/sub joins two computed tensors of *different* widths (a residual).

    ``x + 0.04 * x**3`` (GELU) adds a width to itself and is not a residual join.
    """
    if getattr(node.target, "overloadpacket", None) not in RESIDUAL_OPS:
        return []
    # A parameter seen through views (gpt-oss's ``bias[..., None, :]``) is a bias, not a joined branch.
    computed = [t for t in tensors if is_activation(t)]
    nd = len(out_shape)
    out = []
    for i, size in enumerate(out_shape):
        atoms = []
        for t in computed:
            ts = ctx.shape(t)
            j = i - (nd - len(ts))
            if j >= 0 and ts[j] == size > 1:
                atoms.append(frozenset(ctx.table.atoms(ctx.dim(t, j))))
        if len(atoms) >= 2 and any(a.isdisjoint(b) for a in atoms for b in atoms if a is not b):
            out.append(i)
    return out


# Binary overloads of reduction ops (``torch.min(a, b)``) are elementwise; exact overloads win the lookup.
register_rule(aten.min.other, aten.max.other)(pointwise)


@register_rule(aten._assert_tensor_metadata, aten._assert_scalar, aten.sym_constrain_range_for_size,
               aten._assert_async, aten.sym_constrain_range)
def no_output(ctx: AnalysisContext, node: fx.Node) -> None:
    """Runtime assertions: no tensor output, no coupling."""
    ctx.layouts[node] = None
