"""Model size and cost figures: parameters and FLOPs (via ``torch.utils.flop_counter``)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any] | None = None) -> int:
    """FLOPs of one forward pass on ``args`` (matmul/conv/attention FLOPs, as PyTorch counts them)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args, **(kwargs or {}))
    return int(counter.get_total_flops())
