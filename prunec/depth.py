"""Depth pruning: remove whole decoder blocks, those that change their input least.

Block influence (ShortGPT's "BI") of a block is ``1 - cos(x_in, x_out)`` between
the hidden state entering and leaving it, averaged over the tokens of the
calibration data: a block whose output is nearly its input (its residual branches
add little) can go.  Removal works on the Hugging Face module (a new
``ModuleList`` without those blocks, ``num_hidden_layers`` and the per-layer
indices updated), so the result is again a stock model that width pruning,
``save_pretrained`` and ``from_pretrained`` handle as usual.  Supported for models
whose decoder keeps its blocks in ``model.layers`` (the LLaMA family).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prunec.errors import ConfigError


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder's list of blocks (``model.model.layers`` for LLaMA-family causal LMs)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    config = getattr(model, "config", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(config, "num_hidden_layers"):
        raise ConfigError(f"depth pruning needs a Hugging Face decoder with its blocks in model.layers (the LLaMA "
                          f"family); {type(model).__name__} has none: prune widths only (omit --drop-blocks)")
    return layers


def _hidden(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise ConfigError("cannot find the hidden state of a decoder block's input/output")


@torch.no_grad()
def block_influence(model: torch.nn.Module, batches: Sequence[tuple], kwargs: Mapping[str, Any] | None = None) -> np.ndarray:
    """``1 - cos(input, output)`` of every decoder block, averaged over all calibration tokens."""
    if not batches:
        raise ConfigError("block influence needs calibration data (--calib FILE)")
    blocks = decoder_blocks(model)
    sums = np.zeros(len(blocks))
    counts = np.zeros(len(blocks))
    inputs: dict[int, torch.Tensor] = {}
    handles = []

    def pre_hook(i: int):
        def hook(_module, args, kw):
            inputs[i] = _hidden(args if args else (kw["hidden_states"],))
        return hook

    def post_hook(i: int):
        def hook(_module, _args, _kw, output):
            x, y = inputs.pop(i).float(), _hidden(output).float()
            cos = F.cosine_similarity(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), dim=-1)
            sums[i] += float((1.0 - cos).sum())
            counts[i] += cos.numel()
        return hook

    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook(i), with_kwargs=True))
    try:
        for batch in batches:
            model(*batch, **dict(kwargs or {}))
    finally:
        for h in handles:
            h.remove()
    return sums / np.maximum(counts, 1)


def drop_blocks(model: torch.nn.Module, indices: Sequence[int]) -> torch.nn.Module:
    """A copy of ``model`` without the decoder blocks ``indices`` (config and layer indices updated)."""
    blocks = decoder_blocks(model)
    drop = set(int(i) for i in indices)
    if not drop <= set(range(len(blocks))):
        raise ConfigError(f"block indices {sorted(drop)} out of range: the model has {len(blocks)} blocks")
    if len(drop) >= len(blocks):
        raise ConfigError(f"cannot remove all {len(blocks)} decoder blocks; keep at least one")
    new = copy.deepcopy(model)
    base = getattr(new, "model", new)
    kept = [b for i, b in enumerate(base.layers) if i not in drop]
    base.layers = torch.nn.ModuleList(kept)
    config = new.config
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in drop]
    config.num_hidden_layers = len(kept)
    # Attention layers index the KV cache by their position in the stack.
    for i, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
    return new.eval()


def least_influential(influence: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` blocks with the lowest influence, in increasing order of index."""
    if not 0 <= n < len(influence):
        raise ConfigError(f"--drop-blocks {n}: the model has {len(influence)} blocks; choose 0 to {len(influence) - 1}")
    return sorted(int(i) for i in np.argsort(influence, kind="stable")[:n])
