"""bfloat16 autocast for recovery (distillation), with the output head kept in float32.

On a CPU with AMX or AVX-512 BF16, ``torch.autocast("cpu", dtype=torch.bfloat16)`` runs a
distillation window 1.2-1.5x faster than float32 (SmolLM2-135M, 2 cores: 2.3-2.8 s vs 3.2-3.3 s in
benchmarks/recovery_precision.py; 2.07 s averaged over a 2,400-window recovery).
Autocast also rounds the logits to bfloat16 (8 bits of mantissa: a logit of 16 is known to 0.06),
which is noise of the size of the KL divergence that recovery is driving down, so the layer that
produces the outputs (the language-model head) is computed in float32 from float32 weights.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from prunec.errors import ConfigError

PRECISIONS = ("fp32", "bf16")

# Ops that only reshape or relabel a tensor between the head's product and the graph's output.
_PASS_THROUGH = {
    torch.ops.aten.alias.default, torch.ops.aten.view.default, torch.ops.aten.reshape.default,
    torch.ops.aten._unsafe_view.default, torch.ops.aten.clone.default, torch.ops.aten.contiguous.default,
    torch.ops.aten.to.dtype, torch.ops.aten._to_copy.default, torch.ops.aten.squeeze.dim,
    torch.ops.aten.unsqueeze.default,
}
_PRODUCTS = {torch.ops.aten.linear.default, torch.ops.aten.mm.default, torch.ops.aten.matmul.default,
             torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this build or device cannot run, naming what to use instead."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16 support; use precision fp32")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``precision="bf16"``, nothing for ``"fp32"``.

    Enter it around each forward pass, not around a training loop: autocast caches the bfloat16
    copies of the weights until its outermost region exits, so a region spanning optimizer steps
    would keep computing with the weights of the first step (in a development check with that
    version, a 25-step distillation of SmolLM2 ended at perplexity 116 instead of 51).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def float32_output_heads(precision: str, *modules: torch.nn.Module) -> Iterator[None]:
    """With ``precision="bf16"``, :func:`float32_output_head` for each module; else nothing."""
    with contextlib.ExitStack() as stack:
        if precision != "fp32":
            for module in modules:
                stack.enter_context(float32_output_head(module))
        yield


@contextlib.contextmanager
def float32_output_head(module: torch.nn.Module) -> Iterator[bool]:
    """While active, the product that makes ``module``'s first output runs in float32 even under
    autocast; yields whether such a product was found (a graph's last matmul/linear, or a Hugging
    Face model's output embeddings)."""
    if isinstance(module, torch.fx.GraphModule):
        node = output_product(module.graph)
        if node is None:
            yield False
            return
        target = node.target
        node.target = _float32(target)
        module.recompile()
        try:
            yield True
        finally:
            node.target = target
            module.recompile()
        return
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        yield False
        return
    head.forward = _float32(torch.nn.Linear.forward.__get__(head))  # instance attribute shadows the method
    try:
        yield True
    finally:
        del head.forward


def output_product(graph: torch.fx.Graph) -> torch.fx.Node | None:
    """The matrix product whose result is the graph's first output, through reshapes and aliases."""
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    node = output.args[0]
    while isinstance(node, (tuple, list)) and node:
        node = node[0]
    while isinstance(node, torch.fx.Node) and node.op == "call_function":
        if node.target in _PRODUCTS:
            return node
        if node.target not in _PASS_THROUGH or not node.args:
            return None
        node = node.args[0]
    return None


def _float32(function: Callable[..., Any]) -> Callable[..., Any]:
    def run_in_float32(*args: Any, **kwargs: Any) -> Any:
        cast = lambda v: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v  # noqa: E731
        device = next((v.device.type for v in args if isinstance(v, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return function(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
    return run_in_float32
