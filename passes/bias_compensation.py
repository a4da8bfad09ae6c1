"""Bias compensation (FLAP): fold the mean contribution of removed input channels into the bias.

For a linear layer ``y = W x + b`` whose input channels ``P`` are about to be
removed, ``b' = b + W[:, P] @ mean(x_P)`` keeps the layer's output right on
average.  Linear layers without a bias get one (a new parameter next to the
weight).  Run before structured removal, on the unsliced graph.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx

from prunec.analysis.analyze import Analysis, Slot
from prunec.attrs import get_path, set_tensor
from prunec.pass_api import PassResult, register_pass
from prunec.stats import CalibrationStats

aten = torch.ops.aten


def _linear_nodes_by_weight(gm: fx.GraphModule) -> dict[str, list[fx.Node]]:
    out: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == aten.linear.default and node.args[1].op == "get_attr":
            out.setdefault(str(node.args[1].target), []).append(node)
    return out


@register_pass("bias-compensation", requires=("coupled groups analysed", "calibration statistics"), exact=False)
class BiasCompensation:
    """Add the mean contribution of to-be-removed input channels to each reading linear layer's bias."""

    def __init__(self, analysis: Analysis, removed: dict[int, tuple[int, ...]], stats: CalibrationStats) -> None:
        self.analysis = analysis
        self.removed = removed
        self.stats = stats

    def __call__(self, gm: fx.GraphModule) -> PassResult:
        analysis = self.analysis
        linears = _linear_nodes_by_weight(gm)
        delta: dict[str, torch.Tensor] = {}
        for gid, units in self.removed.items():
            if not units:
                continue
            group = analysis.groups[gid]
            for m in group.members:
                if m.shared or m.dim != 1 or m.name not in linears or m.name not in self.stats.inputs:
                    continue
                coords = analysis.unit_coords(group, m)
                positions = np.flatnonzero(np.isin(coords, units))
                if positions.size == 0:
                    continue
                w = get_path(gm, m.name).detach()
                mean = self.stats.inputs[m.name].mean.to(w.dtype)
                idx = torch.as_tensor(positions, dtype=torch.long)
                d = w[:, idx] @ mean[idx]
                delta[m.name] = delta.get(m.name, torch.zeros_like(d)) + d
        for name, d in delta.items():
            for node in linears[name]:
                add_to_bias(self.analysis, gm, node, name, d)
        gm.recompile()
        return PassResult(gm, modified=bool(delta))


def add_to_bias(analysis: Analysis, gm: fx.GraphModule, node: fx.Node, weight_name: str, d: torch.Tensor) -> None:
    """Add ``d`` to the bias of linear ``node``, creating the bias (and its analysis slot) if it has none."""
    bias = node.args[2] if len(node.args) > 2 else None
    if isinstance(bias, fx.Node) and bias.op == "get_attr":
        name = str(bias.target)
        set_tensor(gm, name, get_path(gm, name).detach() + d)
        return
    name = weight_name.rsplit(".", 1)[0] + ".bias" if "." in weight_name else "bias_" + weight_name
    *path, attr = name.split(".")
    owner = gm.get_submodule(".".join(path)) if path else gm
    owner.register_parameter(attr, torch.nn.Parameter(d.clone(), requires_grad=False))
    weight_node = node.args[1]
    with gm.graph.inserting_after(weight_node):
        bias_node = gm.graph.get_attr(name)
    w_val = weight_node.meta.get("val")
    bias_node.meta["val"] = d.new_empty(d.shape) if w_val is None else w_val.new_empty((w_val.shape[0],))
    node.args = (node.args[0], weight_node, bias_node)
    # The new bias follows the weight's output dim: structured removal must slice it too.
    ctx = analysis.context
    out_layout = ctx.layouts[weight_node][0]
    ctx.layouts[bias_node] = [out_layout]
    analysis.slots[name] = Slot(name, "parameter", tuple(d.shape), [out_layout])
    analysis.aliases[name] = [name]
