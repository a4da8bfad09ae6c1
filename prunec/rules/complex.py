"""Complex views for rotary embeddings: view_as_complex, view_as_real, polar.

Meta's reference LLaMA rotates ``q``/``k`` as complex numbers:
``view_as_real(view_as_complex(q.reshape(..., d / 2, 2)) * polar(1, angles)).flatten(-2)``.
``view_as_complex`` reinterprets a trailing ``(..., n, 2)`` real pair dim as ``(..., n)`` complex
numbers and ``view_as_real`` does the inverse: the ``n`` dims keep their layouts and the pair dim
(real, imaginary) is a fixed size-2 dim that is never a width.  ``polar`` is elementwise.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules._common import broadcast_dims, operands
from prunec.rules.registry import register_rule

aten = torch.ops.aten

PAIR = "real/imaginary pair of a complex view"


@register_rule(aten.view_as_complex)
def view_as_complex(ctx: AnalysisContext, node: fx.Node) -> None:
    xd = ctx.dims(node.args[0])
    ctx.freeze(xd[-1], PAIR)
    ctx.set(node, xd[:-1])


@register_rule(aten.view_as_real)
def view_as_real(ctx: AnalysisContext, node: fx.Node) -> None:
    pair = ctx.table.layout_for_size(2)
    ctx.freeze(pair, PAIR)
    ctx.set(node, list(ctx.dims(node.args[0])) + [pair])


@register_rule(aten.polar, aten.complex)
def polar(ctx: AnalysisContext, node: fx.Node) -> None:
    """``abs * exp(i * angle)`` (``complex(real, imag)``): elementwise in both operands."""
    tensors = ctx.tensor_args(node)
    ctx.set(node, broadcast_dims(ctx, operands(ctx, tensors), ctx.shape(node), f"{node.target} operands"))
