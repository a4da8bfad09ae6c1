"""Annotate every node with the parameters it reads and the FLOPs it costs (``node.meta``).

``node.meta["prunec_params"]``: elements of the parameters the node reads directly
(a tensor read by several nodes counts at its first reader, so the annotations sum to the
model's parameter count).  ``node.meta["prunec_flops"]``: FLOPs of the node by PyTorch's
flop counter on its input shapes (:func:`prunec.metrics.op_flops`).
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
import torch.utils._pytree as pytree

from prunec.attrs import get_path
from prunec.metrics import op_flops
from prunec.pass_api import COSTS_ANNOTATED, SHAPES_PROPAGATED, PassResult, register_pass

PARAMS_KEY = "prunec_params"
FLOPS_KEY = "prunec_flops"


def _meta_value(arg: Any) -> Any:
    return arg.meta.get("val") if isinstance(arg, fx.Node) else arg


def node_flops(node: fx.Node) -> int:
    """FLOPs of one ``call_function`` node from its inputs' metadata (0 for other nodes)."""
    if node.op != "call_function" or not hasattr(node.target, "_schema"):
        return 0  # higher-order ops and Python callables: no flop formula
    args = pytree.tree_map(_meta_value, node.args)
    kwargs = pytree.tree_map(_meta_value, dict(node.kwargs))
    try:
        return op_flops(node.target, args, kwargs)
    except (NotImplementedError, RuntimeError):
        return 0  # ops that need data (a copy out of a meta tensor) are not matmul/conv: no FLOPs


def annotate(gm: fx.GraphModule) -> tuple[int, int]:
    """Write the annotations; return the totals ``(params, flops)``."""
    parameters = {name for name, _ in gm.named_parameters(remove_duplicate=False)}
    counted: set[int] = set()
    total_params = total_flops = 0
    for node in gm.graph.nodes:
        params = 0
        for arg in pytree.tree_leaves((node.args, node.kwargs)):
            if isinstance(arg, fx.Node) and arg.op == "get_attr" and str(arg.target) in parameters:
                tensor = get_path(gm, str(arg.target))
                if id(tensor) not in counted:
                    counted.add(id(tensor))
                    params += tensor.numel()
        flops = node_flops(node)
        node.meta[PARAMS_KEY], node.meta[FLOPS_KEY] = params, flops
        total_params += params
        total_flops += flops
    return total_params, total_flops


@register_pass("annotate-costs", requires=(SHAPES_PROPAGATED,), ensures=(COSTS_ANNOTATED,))
def annotate_costs(gm: fx.GraphModule) -> PassResult:
    """Annotate every node with params/FLOPs in node.meta (prunec_params, prunec_flops)."""
    # Only metadata that the printed IR does not show: the program is unchanged.
    annotate(gm)
    return PassResult(gm, modified=False)
