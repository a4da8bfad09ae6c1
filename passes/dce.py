"""Dead-code elimination: erase pure nodes nobody uses, and the parameters nobody reads."""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.pass_api import NO_DEAD_NODES, PassResult, register_pass


def _delete_attr(gm: fx.GraphModule, path: str) -> None:
    *parents, attr = path.split(".")
    owner: torch.nn.Module = gm
    for part in parents:
        owner = getattr(owner, part)
    if attr in owner._parameters:
        del owner._parameters[attr]
    elif attr in owner._buffers:
        del owner._buffers[attr]
    elif hasattr(owner, attr):
        delattr(owner, attr)


def eliminate_dead_code(gm: fx.GraphModule) -> int:
    """Erase dead pure nodes (``fx`` impurity rules) and unread tensors; return how many were removed."""
    removed = 0
    # Reverse order: erasing a user can make its inputs dead in the same sweep.
    for node in reversed(list(gm.graph.nodes)):
        if node.op in ("placeholder", "output") or node.users or node.is_impure():
            continue
        gm.graph.erase_node(node)
        removed += 1
    read = {str(n.target) for n in gm.graph.find_nodes(op="get_attr")}
    # A submodule called as a whole (call_module, e.g. after fx.symbolic_trace) reads all its tensors.
    called = tuple(f"{n.target}." for n in gm.graph.find_nodes(op="call_module"))
    for name, _ in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False)):
        if name not in read and not name.startswith(called):
            _delete_attr(gm, name)
            removed += 1
    if removed:
        gm.graph.lint()
        gm.recompile()
    return removed


@register_pass("dce", ensures=(NO_DEAD_NODES,))
def dead_code_elimination(gm: fx.GraphModule) -> PassResult:
    """Dead-code elimination: remove unused pure nodes and parameters/buffers no node reads."""
    return PassResult(gm, modified=eliminate_dead_code(gm) > 0)
