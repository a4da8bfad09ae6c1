"""Fold an inference BatchNorm into the convolution or linear layer that feeds it.

``bn(conv(x, W, b)) = conv(x, W * s, (b - mean) * s + beta)`` with
``s = gamma / sqrt(var + eps)`` per output channel.  Folded in float64 and cast back,
so outputs match to float rounding.  The BatchNorm's tensors are left for ``dce``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from prunec.attrs import get_path, set_tensor
from prunec.pass_api import NO_DEAD_NODES, SHAPES_PROPAGATED, PassResult, register_pass
from prunec.shapes import add_tensor_attr, free_attr_path

aten = torch.ops.aten

# Producers whose output channel is dim 1 of the output and dim 0 of the weight; bias is arg 2.
CONV_OPS = frozenset({aten.conv1d.default, aten.conv2d.default, aten.conv3d.default})
LINEAR_OPS = frozenset({aten.linear.default})


@dataclass(frozen=True)
class BatchNormSite:
    """One BatchNorm and where its parts are: the producer, the BN tensors, eps, the nodes to replace."""

    producer: fx.Node
    bn: fx.Node
    gamma: fx.Node | None
    beta: fx.Node | None
    mean: fx.Node
    var: fx.Node
    eps: float
    replaced: fx.Node  # the node whose users switch to the producer


def _single_reader(node: object) -> bool:
    """A ``get_attr`` whose tensor is read by exactly one node (not tied to other layers)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return False
    return sum(1 for n in node.graph.find_nodes(op="get_attr") if n.target == node.target) == 1


def _site(node: fx.Node) -> BatchNormSite | None:
    if node.op != "call_function":
        return None
    if node.target == aten.batch_norm.default:
        x, gamma, beta, mean, var, training, _, eps = node.args[:8]
        if training:
            return None
        replaced = node
    elif node.target == aten._native_batch_norm_legit_no_training.default:
        x, gamma, beta, mean, var, _, eps = node.args[:7]
        users = list(node.users)
        if len(users) != 1 or users[0].target is not operator.getitem or users[0].args[1] != 0:
            return None
        replaced = users[0]
    else:
        return None
    if not isinstance(x, fx.Node) or len(x.users) != 1 or x.op != "call_function":
        return None
    if x.target in CONV_OPS:
        pass
    elif x.target in LINEAR_OPS:
        if x.meta["val"].dim() != 2:  # BatchNorm1d normalises dim 1, the linear's features only at rank 2
            return None
    else:
        return None
    bias = x.args[2] if len(x.args) > 2 else x.kwargs.get("bias")
    if not _single_reader(x.args[1]) or not (bias is None or _single_reader(bias)):
        return None
    if not all(isinstance(t, fx.Node) and t.op == "get_attr" for t in (mean, var)):
        return None
    if any(t is not None and not (isinstance(t, fx.Node) and t.op == "get_attr") for t in (gamma, beta)):
        return None
    return BatchNormSite(x, node, gamma, beta, mean, var, float(eps), replaced)


def _tensor(gm: fx.GraphModule, node: fx.Node | None) -> torch.Tensor | None:
    return None if node is None else get_path(gm, str(node.target)).detach().double()


def fold(gm: fx.GraphModule, site: BatchNormSite) -> None:
    """Rewrite the producer's weight and bias and route the BatchNorm's users to the producer."""
    x = site.producer
    weight_node = x.args[1]
    w = get_path(gm, str(weight_node.target))
    mean, var = _tensor(gm, site.mean), _tensor(gm, site.var)
    gamma = _tensor(gm, site.gamma)
    beta = _tensor(gm, site.beta)
    scale = (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + site.eps)
    shift = beta if beta is not None else torch.zeros_like(mean)
    w_new = w.detach().double() * scale.reshape(-1, *([1] * (w.dim() - 1)))
    set_tensor(gm, str(weight_node.target), w_new.to(w.dtype))
    bias_node = x.args[2] if len(x.args) > 2 else x.kwargs.get("bias")
    b_old = _tensor(gm, bias_node) if bias_node is not None else torch.zeros_like(mean)
    b_new = ((b_old - mean) * scale + shift).to(w.dtype)
    if bias_node is not None:
        set_tensor(gm, str(bias_node.target), b_new)
    else:
        prefix = str(weight_node.target).rsplit(".", 1)[0] + "." if "." in str(weight_node.target) else ""
        bias_node = add_tensor_attr(gm, free_attr_path(gm, prefix + "bias"), b_new, before=weight_node.next)
        args = list(x.args) + [None] * (3 - len(x.args))
        args[2] = bias_node
        x.args = tuple(args)
        x.kwargs = {k: v for k, v in x.kwargs.items() if k != "bias"}
    site.replaced.replace_all_uses_with(x)
    if site.replaced is not site.bn:
        gm.graph.erase_node(site.replaced)
    gm.graph.erase_node(site.bn)


@register_pass("fold-batchnorm", requires=(SHAPES_PROPAGATED,), ensures=(SHAPES_PROPAGATED,),
               invalidates=(NO_DEAD_NODES,))
def fold_batchnorm(gm: fx.GraphModule) -> PassResult:
    """Fold inference BatchNorm into the preceding conv/linear (its tensors are left for dce)."""
    sites = [s for s in (_site(n) for n in gm.graph.nodes) if s is not None]
    for site in sites:
        fold(gm, site)
    if sites:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, modified=bool(sites))
