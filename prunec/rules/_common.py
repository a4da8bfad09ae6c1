"""Helpers shared by several op-rule families."""

from __future__ import annotations

from math import prod
from typing import Sequence

import torch
import torch.fx as fx

from prunec.analysis.axes import UNIT, Layout, LayoutMismatch
from prunec.analysis.context import AnalysisContext


aten = torch.ops.aten

# Ops that select, re-view or cast a tensor without computing new values from the model input's content.
WEIGHT_VIEWS = {aten.index, aten.index_select, aten.view, aten.reshape, aten._unsafe_view, aten.transpose,
                aten.permute, aten.unsqueeze, aten.squeeze, aten.expand, aten.t, aten._to_copy, aten.clone,
                aten.contiguous, aten.select, aten.slice, aten.numpy_T, aten.mT, aten.swapaxes, aten.alias,
                aten.detach}


def is_activation(node: fx.Node) -> bool:
    """A computed tensor, not a (selected, re-viewed or cast) weight such as an MoE's ``w[expert_ids]``
    or gpt-oss's ``bias[..., None, :]``."""
    while node.op == "call_function" and getattr(node.target, "overloadpacket", None) in WEIGHT_VIEWS:
        node = node.args[0]
    return node.op == "call_function"


def op_name(node: fx.Node) -> str:
    return str(node.target)


def operands(ctx: AnalysisContext, nodes: Sequence[fx.Node]) -> list[tuple[tuple[int, ...], list[Layout]]]:
    """(shape, dim layouts) of each tensor node, the input form of :func:`broadcast_dims`."""
    return [(ctx.shape(n), ctx.dims(n)) for n in nodes]


def broadcast_dims(
    ctx: AnalysisContext,
    inputs: Sequence[tuple[Sequence[int], Sequence[Layout]]],
    out_shape: Sequence[int],
    why: str,
) -> list[Layout]:
    """Unify right-aligned, non-broadcast dimensions of ``inputs``; return the output layouts.

    ``inputs`` holds (shape, dim layouts) pairs, see :func:`operands`.
    """
    nd = len(out_shape)
    out: list[Layout] = []
    for i, size in enumerate(out_shape):
        if size == 1:
            out.append(UNIT)
            continue
        lay: Layout | None = None
        for ts, tdims in inputs:
            j = i - (nd - len(ts))
            if j >= 0 and ts[j] == size:
                cand = tdims[j]
                lay = cand if lay is None else ctx.unify(lay, cand, why)
        out.append(lay if lay is not None else ctx.table.layout_for_size(size))
    return out


def product_of(ctx: AnalysisContext, layouts: Sequence[Layout]) -> Layout:
    """Row-major product of several dimensions' layouts (a merge of dims, as in flatten).

    Only the leading dimension may be a concatenation of segments: ``(a|b) x c`` is
    ``(a x c) | (b x c)``, but ``c x (a|b)`` interleaves and is not representable.
    """
    layouts = [ctx.table.resolve(l) for l in layouts]
    layouts = [l for l in layouts if ctx.table.layout_size(l) != 1]
    if not layouts:
        return UNIT
    head, rest = layouts[0], layouts[1:]
    tail: tuple[int, ...] = ()
    for lay in rest:
        if len(lay) != 1:
            raise LayoutMismatch("a concatenated dimension merged as an inner factor")
        tail += lay[0]
    return tuple(seg + tail for seg in head)


def reshape_dims(
    ctx: AnalysisContext, in_dims: list[Layout], in_shape: Sequence[int], out_shape: Sequence[int], why: str
) -> list[Layout]:
    """Layouts of a reshape's output dims, coupled to the input dims they come from.

    Dims are matched in minimal groups whose element counts agree (the usual view
    algebra); within a group the input dims are merged into one product and split
    again into the output dims by refining axes.
    """
    out: list[Layout | None] = [None] * len(out_shape)
    i = j = 0
    n_in, n_out = len(in_shape), len(out_shape)
    while i < n_in or j < n_out:
        # Size-1 dims on either side map to nothing.
        if i < n_in and in_shape[i] == 1:
            i += 1
            continue
        if j < n_out and out_shape[j] == 1:
            out[j] = UNIT
            j += 1
            continue
        if i >= n_in or j >= n_out:
            break
        gi, gj = [i], [j]
        pi, pj = in_shape[i], out_shape[j]
        while pi != pj:
            if pi < pj:
                i += 1
                gi.append(i)
                pi *= in_shape[i]
            else:
                j += 1
                gj.append(j)
                pj *= out_shape[j]
        i += 1
        j += 1
        try:
            merged = product_of(ctx, [in_dims[k] for k in gi])
            if len(gj) == 1:
                out[gj[0]] = merged
            else:
                fresh = [ctx.table.new(out_shape[k]) if out_shape[k] != 1 else None for k in gj]
                target = ((tuple(a for a in fresh if a is not None)),)
                ctx.table.unify(merged, target)
                for k, a in zip(gj, fresh):
                    out[k] = UNIT if a is None else ctx.table.resolve(((a,),))
        except LayoutMismatch as exc:
            for k in gi:
                ctx.freeze(in_dims[k], f"{why}: {exc}")
            for k in gj:
                lay = ctx.table.layout_for_size(out_shape[k])
                ctx.freeze(lay, f"{why}: {exc}")
                out[k] = lay
    return [o if o is not None else UNIT for o in out]


def numel(shape: Sequence[int]) -> int:
    return prod(shape)


def freeze_where_not_zero(ctx: AnalysisContext, x: fx.Node, layout: Layout, what: str) -> None:
    """Freeze the atoms of ``layout`` at which dead units of ``x`` may be non-zero.

    Called by parameter-free readers of a whole dim (norm statistics, sum, mean): removing
    a unit that is non-zero there would change what they compute.
    """
    from prunec.analysis.zeros import stays_zero

    for atom in ctx.table.atoms(layout):
        if ctx.table.size(atom) > 1 and not stays_zero(ctx, x, atom):
            ctx.freeze(((atom,),), f"{what} statistics read this dim, where a broadcast term keeps removed units "
                                   "non-zero (removal would not be exact)")
