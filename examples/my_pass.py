"""An example third-party pass: fold a constant scale into the linear layer before it.

``linear(x, W, b) * c  ->  linear(x, c*W, c*b)`` removes one elementwise op per layer
(attention logit scaling, residual scaling, ``x * 0.5`` before an output head, ...).

Load it without installing anything::

    prunec passes --pass-file examples/my_pass.py
    prunec opt MODEL --pass-file examples/my_pass.py --passes fold-scale-into-linear,dce -o out.pt2

or install it as a plugin by declaring, in your package's ``pyproject.toml``::

    [project.entry-points."prunec.passes"]
    my_passes = "my_package.my_pass"

See docs/passes.md for the walk-through.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.attrs import get_path, set_tensor
from prunec.pass_api import SHAPES_PROPAGATED, PassResult, register_pass

aten = torch.ops.aten


def _scale_of(node: fx.Node) -> float | None:
    """The constant ``c`` when ``node`` is ``linear(...) * c`` (or ``c * linear(...)``), else None."""
    if node.op != "call_function" or node.target != aten.mul.Tensor:
        return None
    a, b = node.args[:2]
    scale = b if isinstance(a, fx.Node) else a
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        return None
    return float(scale)


def _only_reader(node: object) -> bool:
    """A weight/bias read only here, so scaling it changes no other layer (tied weights stay)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return False
    return sum(1 for n in node.graph.find_nodes(op="get_attr") if n.target == node.target) == 1


@register_pass("fold-scale-into-linear", requires=(SHAPES_PROPAGATED,), ensures=(SHAPES_PROPAGATED,))
def fold_scale_into_linear(gm: fx.GraphModule) -> PassResult:
    """Fold `linear(x, W, b) * c` into `linear(x, c*W, c*b)` (example third-party pass)."""
    folded = 0
    for node in list(gm.graph.nodes):
        scale = _scale_of(node)
        if scale is None:
            continue
        linear = next(a for a in node.args[:2] if isinstance(a, fx.Node))
        if linear.target != aten.linear.default or len(linear.users) != 1:
            continue  # someone else reads the unscaled output
        weight = linear.args[1]
        bias = linear.args[2] if len(linear.args) > 2 else None
        if not _only_reader(weight) or not (bias is None or _only_reader(bias)):
            continue
        for tensor in (weight, bias):
            if tensor is not None:
                set_tensor(gm, str(tensor.target), get_path(gm, str(tensor.target)).detach() * scale)
        node.replace_all_uses_with(linear)  # same shape and dtype: the metadata stays right
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, modified=folded > 0)
