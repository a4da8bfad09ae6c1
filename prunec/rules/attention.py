"""Fused attention: ``scaled_dot_product_attention``, including grouped-query attention.

Batch and head dims of q, k, v and the mask broadcast together; k and v share
the key length; the output has q's length and v's head_dim.  q's head dimension
is declared as the *heads* of the layer.  With ``enable_gqa`` (or after HF's
``repeat_kv``) the query heads are the product ``(kv_heads, queries_per_kv)``.
The q/k head_dim is frozen: it sets the softmax scale and carries rotary
embeddings.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules._common import broadcast_dims
from prunec.rules.registry import register_rule

aten = torch.ops.aten

QK_HEAD_DIM = "q/k head_dim sets the attention scale (and carries rotary embeddings where used)"


@register_rule(aten.scaled_dot_product_attention)
def sdpa(ctx: AnalysisContext, node: fx.Node) -> None:
    q, k, v = node.args[0], node.args[1], node.args[2]
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    gqa = bool(node.kwargs.get("enable_gqa", node.args[7] if len(node.args) > 7 else False))
    qs, ks, vs = ctx.shape(q), ctx.shape(k), ctx.shape(v)
    qd, kd, vd = ctx.dims(q), ctx.dims(k), ctx.dims(v)
    ctx.freeze(qd[-1], QK_HEAD_DIM)
    ctx.freeze(kd[-1], QK_HEAD_DIM)
    ctx.unify(qd[-1], kd[-1], "attention q/k head_dim")
    ctx.tag(vd[-1], "head_dim")
    kv_len = ctx.unify(kd[-2], vd[-2], "attention key length")
    if gqa and len(qs) >= 3 and qs[-3] != ks[-3]:
        rep = ctx.table.new(qs[-3] // ks[-3])
        kv_heads = ctx.unify(kd[-3], vd[-3], "attention kv heads")
        resolved = ctx.table.resolve(kv_heads)[0]
        qd[-3] = ctx.unify(qd[-3], ((resolved + (rep,)),), "grouped-query heads")
        kd = kd[:-3] + [qd[-3]] + kd[-2:]
        vd = vd[:-3] + [qd[-3]] + vd[-2:]
        ks = qs[:-2] + ks[-2:]
        vs = qs[:-2] + vs[-2:]
    batch_shape = ctx.shape(node)[:-2]
    ops = [(qs[:-2], qd[:-2]), (ks[:-2], kd[:-2]), (vs[:-2], vd[:-2])]
    batch = broadcast_dims(ctx, ops, batch_shape, "attention batch/heads")
    if ctx.is_tensor(mask):
        ms, md = ctx.shape(mask), ctx.dims(mask)
        full = batch + [qd[-2], kv_len]
        full_shape = batch_shape + (qs[-2], ks[-2])
        broadcast_dims(ctx, [(full_shape, full), (ms, md)], full_shape, "attention mask")
    if len(batch) >= 1:
        ctx.tag(batch[-1], "heads")
        ctx.declare_heads(node, batch[-1])
    ctx.set(node, batch + [qd[-2], vd[-1]])
