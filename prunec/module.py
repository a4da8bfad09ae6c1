"""The traced (and pruned) graph as a module a PyTorch user can keep using.

``torch.export`` unlifts its program into a module whose ``train()``/``eval()`` raise: its graph
has each mode-dependent op's mode baked in as an argument (``aten.dropout(x, p, train)``,
``aten.batch_norm(..., training, ...)``).  prunec traces in eval mode, and :func:`make_mode_switching`
makes ``train()``/``eval()`` rewrite exactly those arguments, so dropout and batch norm switch as
in the original (batch norm in train mode normalises with batch statistics and updates the
running buffers in place).  :func:`export_program` re-exports the module with its dynamic dims,
the form ``torch.export.save`` writes as ``.pt2``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

aten = torch.ops.aten

# Mode-dependent op -> index of its train/eval flag argument.
MODE_FLAGS: dict[Any, int] = {
    aten.dropout.default: 2,
    aten.feature_dropout.default: 2,
    aten.alpha_dropout.default: 2,
    aten.feature_alpha_dropout.default: 2,
    aten.batch_norm.default: 5,
}


def set_graph_mode(gm: fx.GraphModule, training: bool) -> int:
    """Set the train/eval flag of every mode-dependent op of ``gm``; return how many changed."""
    changed = 0
    for node in gm.graph.nodes:
        index = MODE_FLAGS.get(node.target) if node.op == "call_function" else None
        if index is None or len(node.args) <= index or node.args[index] == training:
            continue
        args = list(node.args)
        args[index] = training
        node.args = tuple(args)
        changed += 1
    if changed:
        gm.recompile()
    return changed


def _train(self: fx.GraphModule, mode: bool = True) -> fx.GraphModule:
    """``nn.Module.train`` that also switches the graph's dropout and batch norm."""
    set_graph_mode(self, bool(mode))
    return torch.nn.Module.train(self, mode)


def make_mode_switching(gm: fx.GraphModule) -> fx.GraphModule:
    """Give the unlifted module of ``torch.export`` working ``train()``/``eval()`` (in place), in eval mode."""
    # The unlifted module raises from instance attributes named train/eval: drop them.
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)
    # GraphModule gives every instance a class of its own (for its generated forward), so this
    # overrides train() (and eval(), which calls it) for this module only.
    type(gm).train = _train
    torch.nn.Module.train(gm, False)
    return gm


def export_program(module: torch.nn.Module, args: Any, kwargs: dict[str, Any] | None = None, *,
                   dynamic: bool = True) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` (e.g. ``PruneResult.module``) with batch and lengths dynamic where
    it allows (as :func:`prunec.trace.trace` does); ``torch.export.save`` writes the result as ``.pt2``."""
    from prunec.trace import _as_tuple, _export, _quiet_torch_logs

    with _quiet_torch_logs():
        ep, _ = _export(module, _as_tuple(args), dict(kwargs or {}), dynamic)
    return ep
