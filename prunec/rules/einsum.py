"""``torch.einsum``: dims that share a subscript letter are coupled.

A letter that appears in several operands couples their dims; the output dims take
the layout of their letter.  As for ``bmm``, a product of two computed tensors
(attention written with einsum) tags the letters both operands share and the output
keeps as attention *heads*, and the letters it contracts as *head_dim*.  Ellipses and
repeated letters within one operand (diagonals) are not handled: the rule raises and
the analysis freezes what the op touches.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from prunec.analysis.context import AnalysisContext
from prunec.rules._common import is_activation
from prunec.rules.registry import register_rule

aten = torch.ops.aten


def parse_equation(equation: str, n_operands: int) -> tuple[list[str], str]:
    """``"bnhd,bmhd->bhnm"`` -> (``["bnhd", "bmhd"]``, ``"bhnm"``); implicit outputs are sorted singletons."""
    equation = equation.replace(" ", "")
    if "." in equation:
        raise ValueError("einsum with an ellipsis")
    lhs, _, rhs = equation.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != n_operands:
        raise ValueError("einsum operand count does not match the equation")
    if "->" not in equation:
        letters = "".join(inputs)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if any(len(set(s)) != len(s) for s in inputs + [rhs]):
        raise ValueError("einsum with a repeated subscript in one operand")
    return inputs, rhs


@register_rule(aten.einsum)
def einsum(ctx: AnalysisContext, node: fx.Node) -> None:
    equation, operands = node.args[0], list(node.args[1])
    inputs, output = parse_equation(equation, len(operands))
    letter_layout: dict[str, object] = {}
    for subs, x in zip(inputs, operands):
        shape, dims = ctx.shape(x), ctx.dims(x)
        if len(subs) != len(shape):
            raise ValueError("einsum subscripts do not match the operand's rank")
        for letter, size, lay in zip(subs, shape, dims):
            if size == 1:
                continue  # broadcast
            prev = letter_layout.get(letter)
            letter_layout[letter] = lay if prev is None else ctx.unify(prev, lay, f"einsum '{letter}'")
    out_shape = ctx.shape(node)
    out = [letter_layout.get(c) if letter_layout.get(c) is not None else ctx.table.layout_for_size(s)
           for c, s in zip(output, out_shape)]
    if len(operands) == 2 and all(is_activation(x) for x in operands):
        shared = set(inputs[0]) & set(inputs[1])
        for letter in shared:
            if letter in letter_layout:
                ctx.tag(letter_layout[letter], "heads" if letter in output else "head_dim")
        for letter in set(output) - shared:
            if letter in letter_layout and letter in inputs[1]:
                ctx.tag(letter_layout[letter], "head_dim")
    ctx.set(node, out)
