"""Recovery: a short knowledge-distillation fine-tune of the pruned model from the base model.

The student (the pruned graph module) is trained to match the teacher's next-token
distribution (KL divergence on logits, per token; for encoders without logits the
relative squared error of the hidden states) on the calibration batches, with
AdamW.  With ``lora_rank`` only low-rank adapters of the linear weights are trained
(:mod:`prunec.lora`) and merged into the weights at the end, so the result has the
same tensors and shapes as without.  On CPU this is meant for small models; it runs
on whatever device the modules live on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from prunec.errors import ConfigError
from prunec.evaluate import logits_of
from prunec.lora import LoRAConfig, attach_lora, merge_lora


@dataclass(frozen=True)
class RecoveryConfig:
    """Distillation settings."""

    steps: int = 64
    lr: float = 2e-5
    temperature: float = 1.0
    lora_rank: int = 0  # 0: train all weights
    lora_alpha: float = 16.0


def distill(student: torch.nn.Module, teacher: torch.nn.Module, batches: Sequence[tuple],
            config: RecoveryConfig = RecoveryConfig(), kwargs: dict[str, Any] | None = None) -> list[float]:
    """Fine-tune ``student`` towards ``teacher`` in place; return the loss of every step."""
    if not batches:
        raise ConfigError("recovery needs calibration batches")
    if config.lora_rank < 0:
        raise ConfigError(f"LoRA rank must be >= 1 (or 0 for full fine-tuning), got {config.lora_rank}")
    kwargs = dict(kwargs or {})
    base = [p for p in student.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in base]
    if config.lora_rank:
        for p in base:
            p.requires_grad_(False)
        params = attach_lora(student, LoRAConfig(config.lora_rank, config.lora_alpha))
        if not params:
            raise ConfigError("LoRA recovery found no linear weights to adapt; recover without --lora-rank")
    else:
        params = base
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    t = config.temperature
    losses = []
    try:
        for step in range(config.steps):
            batch = batches[step % len(batches)]
            with torch.no_grad():
                target = teacher(*batch, **kwargs)
            loss = distillation_loss(student(*batch, **kwargs), target, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        merge_lora(student)
        for p, flag in zip(base, flags):
            p.requires_grad_(flag)
            p.grad = None
    return losses


def distillation_loss(student_out: Any, teacher_out: Any, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of the output distributions per position for models with logits; for
    encoders (a hidden state out) the mean squared error relative to the teacher's mean square."""
    # The teacher is the original model: its output type says whether there are logits.
    if getattr(teacher_out, "logits", None) is None and not isinstance(teacher_out, torch.Tensor):
        pred, target = _hidden(student_out).float(), _hidden(teacher_out).float()
        return (pred - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
    pred, target = logits_of(student_out).float(), logits_of(teacher_out).float()
    t = temperature
    target = F.log_softmax(target / t, dim=-1)
    pred = F.log_softmax(pred / t, dim=-1)
    return (target.exp() * (target - pred)).sum(-1).mean() * t * t


def _hidden(out: Any) -> torch.Tensor:
    value = out if isinstance(out, torch.Tensor) else getattr(out, "last_hidden_state", None)
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError("recovery needs a model whose output is logits or a hidden state")
