"""Write a pruned graph back into a Hugging Face model class with an updated config.

The pruned ``GraphModule`` is exact but static; a Hugging Face model is what
``save_pretrained`` / ``from_pretrained`` and the rest of the ecosystem expect.
For the LLaMA family (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma) and BERT,
:func:`to_pretrained` builds the same class from a config with the new widths
and loads the pruned tensors into it.  Widths must be uniform across layers
(uniform allocation gives that); otherwise keep the ``.pt2`` program.

The pruned graph normalises RMS norms over the *original* hidden width (that is
what keeps hidden-size pruning exact).  A Hugging Face RMSNorm divides by its own
width, so the norm weights are scaled by ``sqrt(N0/N)`` and ``rms_norm_eps`` by
``N0/N``, which gives the identical function:
``x * rsqrt(sum(x^2)/N0 + eps) = sqrt(N0/N) * x * rsqrt(sum(x^2)/N + eps*N0/N)``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from prunec.errors import ConfigError

LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma"}
BERT_FAMILY = {"bert", "roberta"}
# Gemma multiplies embeddings by sqrt(hidden_size), a constant the config would change.
NO_HIDDEN_WRITE_BACK = {"gemma"}


def supported(model: torch.nn.Module) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in LLAMA_FAMILY | BERT_FAMILY


def fit_config_constraints(
    model: torch.nn.Module,
    analysis: Any,
    removed: dict[int, tuple[int, ...]],
    scores: dict[int, Any],
) -> dict[int, tuple[int, ...]]:
    """Keep a few more residual units so that the pruned model still fits its HF config.

    Stock LLaMA-family configs require ``hidden_size % num_attention_heads == 0``;
    the highest-scoring removed residual units are kept until that holds.
    """
    if getattr(getattr(model, "config", None), "model_type", None) not in LLAMA_FAMILY:
        return removed
    heads = [g for g in analysis.groups if g.kind == "heads"]
    residual = [g for g in analysis.groups if g.kind == "residual" and g.id in removed and removed[g.id]]
    if not heads or len(residual) != 1:
        return removed
    new_heads = {g.size - len(removed.get(g.id, ())) for g in heads}
    if len(new_heads) != 1:
        return removed
    n_heads = new_heads.pop()
    g = residual[0]
    units = list(removed[g.id])
    while units and (g.size - len(units)) % n_heads:
        units.remove(max(units, key=lambda u: scores[g.id][u]))
    out = dict(removed)
    out[g.id] = tuple(sorted(units))
    return out


def _state(gm: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in gm.state_dict(keep_vars=False).items()}


def _llama_config(config: Any, state: dict[str, torch.Tensor]) -> Any:
    new = copy.deepcopy(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layer = "model.layers.0."
    hidden = state["model.embed_tokens.weight"].shape[1]
    heads = state[layer + "self_attn.o_proj.weight"].shape[1] // head_dim
    if layer + "self_attn.qkv_proj.weight" in state:  # Phi-3 fuses q, k, v
        kv = (state[layer + "self_attn.qkv_proj.weight"].shape[0] // head_dim - heads) // 2
        ffn = state[layer + "mlp.down_proj.weight"].shape[1]
    else:
        kv = state[layer + "self_attn.k_proj.weight"].shape[0] // head_dim
        ffn = state[layer + "mlp.down_proj.weight"].shape[1]
    if hidden != config.hidden_size and config.model_type in NO_HIDDEN_WRITE_BACK:
        raise ConfigError(f"{config.model_type}: a pruned hidden size cannot be written back to the HF class "
                          "(it scales embeddings by sqrt(hidden_size)); prune without 'residual' or keep the .pt2")
    new.hidden_size = hidden
    new.intermediate_size = ffn
    new.num_attention_heads = heads
    new.num_key_value_heads = kv
    new.head_dim = head_dim
    if hidden != config.hidden_size:
        new.rms_norm_eps = config.rms_norm_eps * config.hidden_size / hidden
    # Bias compensation / reconstruction may have given o_proj and down_proj biases.
    if any(k.endswith("self_attn.o_proj.bias") for k in state) and hasattr(new, "attention_bias"):
        new.attention_bias = True
    if any(k.endswith("mlp.down_proj.bias") for k in state) and hasattr(new, "mlp_bias"):
        new.mlp_bias = True
    return new


def _bert_config(config: Any, state: dict[str, torch.Tensor], prefix: str) -> Any:
    new = copy.deepcopy(config)
    layer = f"{prefix}encoder.layer.0."
    q_rows = state[layer + "attention.self.query.weight"].shape[0]
    if q_rows != config.hidden_size or state[f"{prefix}embeddings.word_embeddings.weight"].shape[1] != config.hidden_size:
        raise ConfigError("BERT's config derives the head size from hidden_size / num_attention_heads, so pruned "
                          "heads or hidden size cannot be written back; prune --kinds channels or keep the .pt2")
    new.intermediate_size = state[layer + "intermediate.dense.weight"].shape[0]
    return new


def _rescale_rms_norms(model: torch.nn.Module, old_hidden: int, new_hidden: int) -> None:
    scale = math.sqrt(old_hidden / new_hidden)
    gemma_style = getattr(model.config, "model_type", "") == "gemma"
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__.endswith("RMSNorm") and module.weight.shape[-1] == new_hidden:
                # New tensors, not in-place: the weights are shared with the pruned graph module.
                w = module.weight
                new = (1.0 + w) * scale - 1.0 if gemma_style else w * scale
                module.weight = torch.nn.Parameter(new, requires_grad=w.requires_grad)


def to_pretrained(original: torch.nn.Module, pruned: torch.nn.Module) -> torch.nn.Module:
    """A new instance of ``original``'s class, with updated config, holding ``pruned``'s tensors.

    Raises :class:`~prunec.errors.ConfigError` when the pruned widths cannot be
    expressed by the class's config (non-uniform layers, unsupported family).
    """
    config = getattr(original, "config", None)
    model_type = getattr(config, "model_type", None)
    state = _state(pruned)
    if model_type in LLAMA_FAMILY:
        new_config = _llama_config(config, state)
    elif model_type in BERT_FAMILY:
        prefix = "" if any(k.startswith("encoder.") for k in state) else f"{original.base_model_prefix}."
        new_config = _bert_config(config, state, prefix)
    else:
        raise ConfigError(f"writing back to a Hugging Face class is supported for {sorted(LLAMA_FAMILY | BERT_FAMILY)}, "
                          f"not '{model_type}'; keep the .pt2 program")
    if hasattr(new_config, "quantization_config"):
        del new_config.quantization_config  # a GGUF-loaded model is float32 once dequantised
    with torch.device("meta"):
        rebuilt = type(original)(new_config)
    expected = rebuilt.state_dict()
    for name, tensor in expected.items():
        have = state.get(name)
        if have is not None and tuple(have.shape) != tuple(tensor.shape):
            raise ConfigError(f"pruned widths are not uniform across layers ({name}: {tuple(have.shape)} vs "
                              f"{tuple(tensor.shape)} from the config); use uniform allocation or keep the .pt2")
    unexpected = [n for n in state if n not in expected]
    if unexpected:
        raise ConfigError(f"the {type(original).__name__} config cannot hold {unexpected[:3]}; keep the .pt2 program")
    buffers = {n for n, _ in rebuilt.named_buffers()}
    for name in [n for n in expected if n not in state and n not in buffers]:
        if not name.endswith(".bias"):
            raise ConfigError(f"pruned program lacks parameter {name}; cannot write back")
        # A config-wide bias flag gives every projection a bias: the ones that had none are zero.
        state[name] = torch.zeros(expected[name].shape, dtype=state[next(iter(state))].dtype)
    rebuilt.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False, assign=True)
    # Non-persistent buffers (rotary inv_freq, Gemma's embed_scale) are not in the state dict and
    # were created on meta: the original model's values are the ones the pruned graph used.
    original_buffers = dict(original.named_buffers())
    for name, buf in list(rebuilt.named_buffers()):
        if buf.device.type != "meta":
            continue
        src = original_buffers.get(name)
        if src is None or src.shape != buf.shape:
            raise ConfigError(f"cannot restore buffer {name} of the rebuilt model; keep the .pt2 program")
        *path, attr = name.split(".")
        owner = rebuilt.get_submodule(".".join(path)) if path else rebuilt
        owner._buffers[attr] = src.clone()
    if model_type in LLAMA_FAMILY and new_config.hidden_size != config.hidden_size:
        _rescale_rms_norms(rebuilt, config.hidden_size, new_config.hidden_size)
    if getattr(config, "tie_word_embeddings", False) and hasattr(rebuilt, "tie_weights"):
        rebuilt.tie_weights()
    return rebuilt.eval()
