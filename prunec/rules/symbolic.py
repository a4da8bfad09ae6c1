"""Symbolic-size arithmetic of a dynamic-shape trace: ``sym_size``, ``s0 * 4``, runtime asserts.

These nodes compute Python integers (batch, length, ``batch * heads``), not tensors: they carry no
layouts and couple nothing.  A size that mixes a symbolic factor with a pruned width (``batch * heads``
in a view) is rescaled by the view's rewrite (:func:`prunec.rules.reshape.rewrite_size_list`).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules.registry import register_rule

aten = torch.ops.aten

SIZE_OPS = (
    aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int, aten.sym_storage_offset.default,
    aten._assert_scalar.default, aten.sym_constrain_range_for_size.default, aten.sym_constrain_range.default,
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod, operator.neg,
    operator.pow, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    torch.sym_max, torch.sym_min, torch.sym_float, torch.sym_int, torch.sym_not, math.ceil, math.floor,
)


@register_rule(*SIZE_OPS)
def size_arithmetic(ctx: AnalysisContext, node: fx.Node) -> None:
    ctx.layouts[node] = None  # an integer (or an assert), never a tensor
