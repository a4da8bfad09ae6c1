"""LoRA adapters for recovery: train ``W + (alpha/r)·B·A`` instead of ``W``, then merge.

The adapters are ``torch.nn.utils.parametrize`` parametrizations of the weights of
the linear layers, so they work on a pruned ``GraphModule`` unchanged (its
``get_attr`` reads go through the parametrization) and merging leaves plain
tensors of the same shapes: the merged model is exported and written back like any
other.  ``B`` starts at zero, so attaching adapters does not change the function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

aten = torch.ops.aten


class LoRA(nn.Module):
    """The parametrization ``W -> W + scale · B @ A`` of one weight of shape (out, in)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, like: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features, dtype=like.dtype, device=like.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(out_features, rank, dtype=like.dtype, device=like.device))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A)


@dataclass(frozen=True)
class LoRAConfig:
    """Rank and scaling (``alpha``) of the adapters."""

    rank: int = 8
    alpha: float = 16.0


def linear_weights(module: nn.Module) -> list[str]:
    """Names of the 2-D weights that the graph's linear ops read (embedding tables excluded,
    also when tied to an output projection)."""
    if not isinstance(module, torch.fx.GraphModule):
        return [f"{n}.weight" for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    linear, embedded = [], set()
    for node in module.graph.nodes:
        packet = getattr(node.target, "overloadpacket", None)
        if node.op != "call_function" or packet not in (aten.linear, aten.embedding):
            continue
        weight = node.args[0] if packet is aten.embedding else node.args[1]
        if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
            (embedded.add if packet is aten.embedding else linear.append)(str(weight.target))
    return [n for n in dict.fromkeys(linear) if n not in embedded]


def attach_lora(module: nn.Module, config: LoRAConfig = LoRAConfig()) -> list[nn.Parameter]:
    """Parametrize every linear weight of ``module`` with a LoRA adapter; return the adapters' parameters."""
    params: list[nn.Parameter] = []
    for name in linear_weights(module):
        owner_path, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        weight = getattr(owner, attr)
        if weight.dim() != 2:
            continue
        adapter = LoRA(weight.shape[0], weight.shape[1], config.rank, config.alpha, weight)
        parametrize.register_parametrization(owner, attr, adapter)
        params += [adapter.A, adapter.B]
    return params


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its weight and remove the parametrizations; return how many were merged."""
    merged = 0
    for owner in list(module.modules()):
        if not parametrize.is_parametrized(owner):
            continue
        for attr in list(owner.parametrizations.keys()):
            parametrize.remove_parametrizations(owner, attr, leave_parametrized=True)
            merged += 1
    return merged
