"""Model size and cost figures: parameters and FLOPs (via ``torch.utils.flop_counter``)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from prunec.shapes import hint_shape


def count_flops(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any] | None = None) -> int:
    """FLOPs of one forward pass on ``args`` (matmul/conv/attention FLOPs, as PyTorch counts them)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args, **(kwargs or {}))
    return int(counter.get_total_flops())


def _meta_like(value: Any) -> Any:
    """Replace every tensor (real or fake) in ``value`` by an empty ``meta`` tensor of its shape and dtype."""
    if isinstance(value, torch.Tensor):
        return torch.empty(hint_shape(value.shape), dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_meta_like(v) for v in value)
    if isinstance(value, dict):
        return {k: _meta_like(v) for k, v in value.items()}
    return value


def op_flops(op: Any, args: tuple, kwargs: dict[str, Any] | None = None) -> int:
    """FLOPs of one call of ``op`` (an ATen overload), counted on ``meta`` tensors of the arguments' shapes.

    Same accounting as :func:`count_flops` (PyTorch's flop counter), without running any
    arithmetic, so it works for fake tensors, shapes parsed from printed IR, and huge layers.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        op(*_meta_like(args), **_meta_like(kwargs or {}))
    return int(counter.get_total_flops())
