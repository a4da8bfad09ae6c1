"""Recovery: a short knowledge-distillation fine-tune of the pruned model from the base model.

The student (the pruned graph module) is trained to match the teacher's next-token
distribution (KL divergence on logits, per token; for encoders without logits the
relative squared error of the hidden states) on the recovery windows (by default the
calibration data), with AdamW, a warm-up and a cosine learning-rate schedule.  With
``lora_rank`` only low-rank adapters of the linear weights are trained
(:mod:`prunec.lora`) and merged into the weights at the end, so the result has the
same tensors and shapes as without.  On CPU this is meant for small models; on a GPU
(``device="auto"`` finds one) 600 steps of 8 windows of 512 tokens took 111 s for SmolLM2-135M on
one H100 with the windows of a step in one pass (``micro_batch=8``, an eager model:
:mod:`prunec.eager_recovery`), against 215 s for 150 steps one window per pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from prunec.devices import module_device, move_batch, move_module, resolve_device
from prunec.errors import ConfigError
from prunec.evaluate import logits_of
from prunec.lora import LoRAConfig, attach_lora, merge_lora
from prunec.mixed_precision import autocast, check_precision, float32_output_heads


@dataclass(frozen=True)
class RecoveryConfig:
    """Distillation settings.

    A step accumulates the gradients of ``batch_size`` windows; the learning rate warms up
    linearly over the first ``warmup`` fraction of the steps, then follows a cosine to zero.
    ``device="auto"`` trains on the first CUDA GPU when one is present (the models are moved
    there for the fine-tune and back afterwards), else on the CPU.
    """

    # Measured on SmolLM2-135M at 80% of its non-embedding parameters (benchmarks/llm_ppl.py
    # --recover-grid): 150 steps of 8 windows at 1e-4 took perplexity 51.49 -> 42.29 (measured while
    # the teacher still trained along, before own_parameters), 300 steps 47.26 -> 40.22 (bf16),
    # 600 steps at lr 6e-4 47.26 -> 38.28 (bf16, GPU; at 1e-4 600 steps gave 40.10). The defaults
    # stay CPU-sized: 600 x 8 windows is hours on 2 cores. MiniLM-L6: cosine 0.9480 -> 0.9584.
    steps: int = 150
    lr: float = 1e-4
    temperature: float = 1.0
    lora_rank: int = 0  # 0: train all weights
    lora_alpha: float = 16.0
    batch_size: int = 8
    warmup: float = 0.05
    max_grad_norm: float = 1.0
    device: str = "auto"
    seed: int = 0
    # "bf16": bfloat16 autocast for the matrix products (the output head stays float32), with
    # float32 weights and optimizer state; worth it on CPUs with AMX / AVX-512 BF16 and on GPUs.
    precision: str = "fp32"
    # Windows stacked into one forward pass (the step's loss is the same). A traced graph has its
    # batch size fixed, so this needs an eager model (e.g. the pruned model rebuilt with
    # prunec.hf.to_pretrained). On a GPU one 512-token window per pass leaves it idle between
    # kernel launches: stacking the 8 windows of a step is what makes recovery fast there.
    micro_batch: int = 1

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        warm = max(1, round(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        progress = (step - warm) / max(1, self.steps - warm)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def distill(student: torch.nn.Module, teacher: torch.nn.Module, batches: Sequence[tuple],
            config: RecoveryConfig = RecoveryConfig(), kwargs: dict[str, Any] | None = None) -> list[float]:
    """Fine-tune ``student`` towards ``teacher`` in place; return the loss of every step.

    Windows are visited in a shuffled order (seeded), one epoch after another.
    """
    if not batches:
        raise ConfigError("recovery needs calibration batches")
    if config.lora_rank < 0:
        raise ConfigError(f"LoRA rank must be >= 1 (or 0 for full fine-tuning), got {config.lora_rank}")
    if config.steps < 1 or config.batch_size < 1:
        raise ConfigError(f"recovery needs steps >= 1 and batch size >= 1, got {config.steps} and {config.batch_size}")
    if config.micro_batch < 1:
        raise ConfigError(f"recovery needs a micro-batch of >= 1 windows, got {config.micro_batch}")
    if config.micro_batch > 1 and not stackable_kwargs(kwargs):
        raise ConfigError("tensor keyword inputs hold one window's batch axis, so windows cannot be stacked: "
                          "recover with micro_batch=1")
    if config.micro_batch > 1 and isinstance(student, torch.fx.GraphModule):
        raise ConfigError("a traced graph has its batch size fixed, so it takes one window per pass: recover with "
                          "micro_batch=1, or rebuild the model with prunec.hf.to_pretrained first")
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    # The pruned graph keeps the original's untouched tensors (norms, embeddings, unpruned
    # projections) as the very same Parameters: training them in place would move the teacher
    # along with the student and change the caller's original model.
    own_parameters(student, teacher)
    homes = module_device(student), module_device(teacher)
    move_module(student, device)
    move_module(teacher, device)
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in (kwargs or {}).items()}
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
    # On a GPU TF32 matrix products give most of the speed of bf16 at float32's range.
    precision = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    order = _window_order(len(batches), config.steps * config.batch_size, config.seed)
    losses = []
    try:
        with float32_output_heads(config.precision, student, teacher):
            for step in range(config.steps):
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate(step)
                optimizer.zero_grad(set_to_none=True)
                # Summed on the device: a float() per pass would wait for the GPU each time.
                total = torch.zeros((), device=device)
                picked = order[step * config.batch_size:(step + 1) * config.batch_size]
                for start in range(0, len(picked), config.micro_batch):
                    chunk = picked[start:start + config.micro_batch]
                    batch = move_batch(_stack([batches[i] for i in chunk]), device)
                    with torch.no_grad(), autocast(config.precision, device):
                        target = teacher(*batch, **kwargs)
                    with autocast(config.precision, device):
                        out = student(*batch, **kwargs)
                    # The loss is a mean over the chunk's positions: weighting it by the chunk's share
                    # of the step keeps the step's loss the mean over its windows.
                    loss = distillation_loss(out, target, config.temperature) * (len(chunk) / config.batch_size)
                    loss.backward()
                    total += loss.detach()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                losses.append(float(total))
    finally:
        merge_lora(student)
        for p, flag in zip(base, flags):
            p.requires_grad_(flag)
            p.grad = None
        del optimizer
        torch.set_float32_matmul_precision(precision)
        move_module(student, homes[0])
        move_module(teacher, homes[1])
    return losses


def own_parameters(student: torch.nn.Module, teacher: torch.nn.Module) -> int:
    """Give ``student`` its own copy of every parameter whose storage it shares with ``teacher``
    (in place; ties inside the student are kept); returns how many parameters were copied."""
    shared = {_storage_key(t) for t in [*teacher.parameters(), *teacher.buffers()]}
    replaced: dict[int, torch.nn.Parameter] = {}  # id of an old Parameter -> its copy (keeps ties)
    copies: dict[tuple, torch.Tensor] = {}         # an aliased view -> its copied data
    for module in student.modules():
        for name, param in list(module._parameters.items()):
            if param is None or (id(param) not in replaced and _storage_key(param) not in shared):
                continue
            if id(param) not in replaced:
                view = (_storage_key(param), param.storage_offset(), tuple(param.shape), param.stride())
                if view not in copies:
                    copies[view] = param.detach().clone()
                replaced[id(param)] = torch.nn.Parameter(copies[view], requires_grad=param.requires_grad)
            module._parameters[name] = replaced[id(param)]
    return len(replaced)


def _storage_key(tensor: torch.Tensor) -> tuple:
    return tensor.device.type, tensor.untyped_storage().data_ptr()


def stackable_kwargs(kwargs: dict[str, Any] | None) -> bool:
    """Whether windows can be stacked next to these keyword inputs: a tensor among them carries
    one window's batch axis."""
    return not any(isinstance(v, torch.Tensor) for v in (kwargs or {}).values())


def _stack(windows: list[tuple]) -> tuple:
    """One batch of ``windows`` (tuples of tensors with a leading batch axis of 1), concatenated
    along that axis."""
    if len(windows) == 1:
        return windows[0]
    shapes = {tuple(tuple(t.shape) if isinstance(t, torch.Tensor) else () for t in w) for w in windows}
    if len(shapes) != 1:
        raise ConfigError("stacking windows into a micro-batch needs windows of one length; use micro_batch=1")
    return tuple(torch.cat(parts) if isinstance(parts[0], torch.Tensor) else parts[0] for parts in zip(*windows))


def _window_order(n: int, count: int, seed: int) -> list[int]:
    """``count`` window indices: shuffled epochs over ``range(n)``."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < count:
        order += torch.randperm(n, generator=generator).tolist()
    return order[:count]


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
