"""Gradients over calibration data, for first-order Taylor importance."""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F

from prunec.errors import ConfigError
from prunec.evaluate import logits_of


def language_model_loss(output: Any, batch: tuple) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM on its own input ids."""
    logits = logits_of(output)
    ids = batch[0]
    if logits.dim() != 3 or ids.dim() != 2 or logits.shape[:2] != ids.shape:
        raise ConfigError("taylor importance needs token-id inputs and [batch, seq, vocab] logits")
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def accumulate_gradients(gm: fx.GraphModule, batches: Iterable[tuple], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Sum of dL/dw over the calibration batches for the named parameters.

    Under ``torch.distributed`` each process passes its share of the batches; the sums are
    all-reduced, so every process returns the gradients summed over the whole set."""
    params = {n: p for n, p in gm.named_parameters() if n in set(names)}
    flags = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        for batch in batches:
            loss = language_model_loss(gm(*batch), batch)
            loss.backward()
        grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in params.items()}
        _all_reduce(grads)
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(flags[n])
    return grads


def _all_reduce(grads: dict[str, torch.Tensor]) -> None:
    from prunec import distributed

    if not distributed.is_distributed():
        return
    names = sorted(grads)
    distributed.check_same_keys(names, "gradients")
    for name in names:
        distributed.all_reduce_sum(grads[name])
