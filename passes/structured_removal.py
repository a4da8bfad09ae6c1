"""Structured removal: physically slice the removed units out of every member tensor.

Given an :class:`~prunec.analysis.analyze.Analysis` and the units to remove per
group, the pass

1. slices every parameter, buffer and constant along each dim whose layout
   contains a pruned axis (tied tensors are sliced once and stay tied);
2. rewrites every constant that depended on a removed width through the op
   rules' ``rewrite`` hooks (view/reshape/expand sizes, split sizes, slice bounds,
   conv/group-norm group counts; ``mean`` and layer/RMS norms over a shrunk width
   keep their original denominator);
3. re-propagates shapes with fake tensors and checks every node's shape against
   the shape the analysis predicts; a mismatch raises ``TransformError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
import torch.fx as fx
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from prunec.analysis.analyze import Analysis
from prunec.analysis.axes import Layout, kept_positions, new_size
from prunec.attrs import get_path, set_tensor
from prunec.errors import TransformError
from prunec.pass_api import PassResult, register_pass
from prunec.rules.registry import lookup_rule
from prunec.shapes import fake_inputs, hint_shape, propagation_mode

aten = torch.ops.aten


@dataclass(frozen=True)
class RemovalPlan:
    """Units to remove, by group id (indices into the group's units)."""

    removed: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not any(self.removed.values())


def plan_masks(analysis: Analysis, plan: RemovalPlan) -> tuple[dict[int, np.ndarray], dict[tuple[int, int], np.ndarray]]:
    """Boolean keep-masks per atomic axis, and per (outer, inner) axis pair for compound groups."""
    kept_1d: dict[int, np.ndarray] = {}
    kept_pairs: dict[tuple[int, int], np.ndarray] = {}
    for gid, units in plan.removed.items():
        if not units:
            continue
        group = analysis.groups[gid]
        if group.frozen:
            raise TransformError(f"group {gid} ({group.label}) is frozen: {group.frozen[0]}")
        mask = np.ones(group.size, dtype=bool)
        mask[list(units)] = False
        if not mask.any():
            raise TransformError(f"removing every unit of group {gid} ({group.label}) would empty it")
        if len(group.axes) == 1:
            kept_1d[group.axes[0]] = mask
        else:
            outer, inner = group.axes
            pair = mask.reshape(analysis.table.size(outer), analysis.table.size(inner))
            counts = pair.sum(axis=1)
            if len(set(counts[counts > 0].tolist())) > 1:
                raise TransformError(
                    f"group {gid} ({group.label}): grouped-query heads must be removed evenly "
                    f"across KV groups (kept per group: {counts.tolist()})"
                )
            kept_pairs[(outer, inner)] = pair
    return kept_1d, kept_pairs


class Rewriter:
    """What op-rule ``rewrite`` hooks use to read old/new widths and edit the graph."""

    def __init__(self, analysis: Analysis, kept_1d, kept_pairs) -> None:
        self.analysis = analysis
        self.table = analysis.table
        self.kept_1d = kept_1d
        self.kept_pairs = kept_pairs
        self.new_axis_sizes: dict[int, int] = {a: int(m.sum()) for a, m in kept_1d.items()}
        for (outer, inner), pair in kept_pairs.items():
            counts = pair.sum(axis=1)
            self.new_axis_sizes[outer] = int((counts > 0).sum())
            self.new_axis_sizes[inner] = int(counts.max())
        self.graph = analysis.graph_module.graph

    # -- reading ---------------------------------------------------------------
    def note(self, node: fx.Node, key: str) -> Any:
        return self.analysis.context.notes.get(node, {}).get(key)

    def layout(self, node: fx.Node, d: int) -> Layout:
        dims = self.analysis.context.layouts[node]
        return dims[d % len(dims)]

    def old_shape(self, node: fx.Node) -> tuple[int, ...]:
        return hint_shape(node.meta["val"].shape)

    def old_size(self, node: fx.Node, d: int) -> int:
        return self.old_shape(node)[d]

    def new_size(self, node: fx.Node, d: int) -> int:
        return new_size(self.table, self.layout(node, d), self.new_axis_sizes)

    def new_axis_size(self, axis: int) -> int:
        return new_size(self.table, ((axis,),), self.new_axis_sizes)

    def kept_indices(self, node: fx.Node, d: int) -> np.ndarray | None:
        """Old indices of ``node``'s dim ``d`` that survive, or None if the dim is unchanged."""
        lay = self.layout(node, d)
        kept = kept_positions(self.table, lay, self.kept_1d, self.kept_pairs)
        return None if len(kept) == self.old_size(node, d) else kept

    # -- graph edits -------------------------------------------------------------
    def _replace(self, node: fx.Node, new: fx.Node) -> None:
        """Replace ``node`` by ``new``; ``new`` inherits its layouts so later rewrites can read them."""
        ctx = self.analysis.context
        ctx.layouts[new] = ctx.layouts[node]
        new.meta["val"] = node.meta["val"]
        node.replace_all_uses_with(new)
        self.graph.erase_node(node)

    def replace_mean_with_sum(self, node: fx.Node, original_width: int) -> None:
        x = node.args[0]
        ndim = len(self.old_shape(x))
        dims = node.args[1] if len(node.args) > 1 and node.args[1] is not None else list(range(ndim))
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        with self.graph.inserting_after(node):
            total = self.graph.call_function(aten.sum.dim_IntList, (x, dims, keepdim), {k: v for k, v in node.kwargs.items() if k == "dtype"})
        with self.graph.inserting_after(total):
            avg = self.graph.call_function(aten.div.Tensor, (total, float(original_width)))
        self._replace(node, avg)

    def replace_with_original_width_norm(self, node: fx.Node, n_dims: int, original_width: int) -> None:
        """Layer/RMS norm whose statistics still count the removed (zero) channels."""
        g = self.graph
        x = node.args[0]
        is_rms = node.target.overloadpacket is aten.rms_norm
        w = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
        if is_rms:
            b = None
            eps = node.args[3] if len(node.args) > 3 else node.kwargs.get("eps")
            if eps is None:
                eps = torch.finfo(node.meta["val"].dtype).eps
        else:
            b = node.args[3] if len(node.args) > 3 else node.kwargs.get("bias")
            eps = node.args[4] if len(node.args) > 4 else node.kwargs.get("eps", 1e-5)
        dims = list(range(-n_dims, 0))
        n_new = 1
        for d in dims:
            n_new *= self.new_size(x, d)
        removed = original_width - n_new

        def call(fn, *args):
            return g.call_function(fn, args)

        with g.inserting_before(node):
            if is_rms:
                sq = call(aten.mul.Tensor, x, x)
                ms = call(aten.div.Tensor, call(aten.sum.dim_IntList, sq, dims, True), float(original_width))
                y = call(aten.mul.Tensor, x, call(aten.rsqrt.default, call(aten.add.Tensor, ms, float(eps))))
            else:
                mu = call(aten.div.Tensor, call(aten.sum.dim_IntList, x, dims, True), float(original_width))
                centred = call(aten.sub.Tensor, x, mu)
                ss = call(aten.sum.dim_IntList, call(aten.mul.Tensor, centred, centred), dims, True)
                # Each removed zero channel contributed (0 - mu)^2 to the original sum of squares.
                ss = call(aten.add.Tensor, ss, call(aten.mul.Tensor, call(aten.mul.Tensor, mu, mu), float(removed)))
                var = call(aten.div.Tensor, ss, float(original_width))
                y = call(aten.mul.Tensor, centred, call(aten.rsqrt.default, call(aten.add.Tensor, var, float(eps))))
            if w is not None:
                y = call(aten.mul.Tensor, y, w)
            if b is not None:
                y = call(aten.add.Tensor, y, b)
        self._replace(node, y)


def slice_tensors(analysis: Analysis, rw: Rewriter) -> int:
    """Slice every member tensor; return how many tensors changed.

    Each tensor is replaced as soon as it is sliced, so that the unpruned one can be freed
    before the next is copied (peak memory: the model plus one tensor, not two models)."""
    gm = analysis.graph_module
    changed = 0
    for name, slot in analysis.slots.items():
        data = get_path(gm, name).detach()
        touched = False
        for d, lay in enumerate(slot.dims):
            kept = kept_positions(analysis.table, lay, rw.kept_1d, rw.kept_pairs)
            if len(kept) != slot.shape[d]:
                index = torch.as_tensor(kept, dtype=torch.long, device=data.device)
                data = data.index_select(d, index)
                touched = True
        if not touched:
            continue
        set_tensor(gm, name, data.contiguous())
        del data
        changed += 1
        # Tied aliases must keep pointing at the very same Parameter object.
        first = get_path(gm, name)
        for alias in analysis.aliases[name]:
            if alias != name:
                *parents, attr = alias.split(".")
                setattr(get_path(gm, ".".join(parents)) if parents else gm, attr, first)
    return changed


def rewrite_constants(analysis: Analysis, rw: Rewriter) -> None:
    for node in list(analysis.graph_module.graph.nodes):
        if node.op != "call_function" or node not in analysis.context.layouts:
            continue
        rule = lookup_rule(node.target)
        if rule is not None and rule.rewrite is not None:
            rule.rewrite(rw, node)


def propagate_and_check(analysis: Analysis, rw: Rewriter) -> None:
    """Re-propagate shapes with fake tensors; compare with the analysis's predicted shapes."""
    gm = analysis.graph_module
    predicted: dict[str, tuple[int, ...]] = {}
    for node in gm.graph.nodes:
        lay = analysis.context.layouts.get(node)
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and isinstance(lay, list):
            predicted[node.name] = tuple(new_size(rw.table, d, rw.new_axis_sizes) for d in lay)
    # A dynamic-shape trace re-propagates in its own shape environment: batch/length stay symbolic.
    mode = propagation_mode(gm)
    try:
        FakeTensorProp(gm, mode).propagate(*fake_inputs(gm, mode))
    except Exception as exc:  # noqa: BLE001 - reported as a transform failure with the cause
        raise TransformError(f"shape re-propagation failed after pruning: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    for node in gm.graph.nodes:
        want = predicted.get(node.name)
        val = node.meta.get("val")
        if want is None or not isinstance(val, torch.Tensor):
            continue
        got = hint_shape(val.shape)
        if got != want:
            raise TransformError(f"node {node.name} ({node.target}) has shape {got} after pruning, expected {want}")


@register_pass("structured-removal", requires=("coupled groups analysed",), ensures=("shapes propagated",), exact=False)
class StructuredRemoval:
    """Remove the planned units of coupled groups: slice tensors, rewrite shape constants, check shapes."""

    def __init__(self, analysis: Analysis, plan: RemovalPlan) -> None:
        self.analysis = analysis
        self.plan = plan

    def __call__(self, gm: fx.GraphModule) -> PassResult:
        if gm is not self.analysis.graph_module:
            raise TransformError("structured-removal must run on the graph module it analysed")
        if self.plan.is_empty():
            return PassResult(gm, modified=False)
        kept_1d, kept_pairs = plan_masks(self.analysis, self.plan)
        rw = Rewriter(self.analysis, kept_1d, kept_pairs)
        slice_tensors(self.analysis, rw)
        rewrite_constants(self.analysis, rw)
        gm.graph.lint()
        gm.recompile()
        propagate_and_check(self.analysis, rw)
        return PassResult(gm, modified=True)
