"""Write a pruned LLaMA-family model as GGUF, the file llama.cpp runs, with per-layer widths.

The tensors are the pruned program's own (Hugging Face names, so ``gguf``'s tensor-name map
translates them); the hyper-parameters are read from their shapes, not from the config, so widths
that differ by layer are written as they are.  llama.cpp's loader reads ``feed_forward_length``,
``head_count`` and ``head_count_kv`` as one number or a per-layer array, but its ``llama``
architecture builds every layer from layer 0's widths; the ``deci`` architecture (Nemotron-51B's)
builds each layer from its own, so non-uniform LLaMA-family models are written as ``deci`` and
uniform ones as their own architecture.  The head size is written explicitly (``key_length``,
``rope.dimension_count``): once the hidden width is pruned it is no longer hidden / heads.

Two details keep the function identical to the pruned graph:
- llama.cpp rotates q/k in interleaved pairs (GPT-J style) where Hugging Face LLaMA rotates halves,
  so q/k rows are permuted as llama.cpp's own converter does (``LlamaModel.permute``);
- the pruned graph normalises RMS norms over the *original* hidden width; llama.cpp divides by the
  tensor's width, so norm weights are scaled by sqrt(N0/N) and epsilon by N0/N (as in
  :mod:`prunec.hf`).

The tokenizer comes along: a model loaded from a GGUF file keeps that file's ``tokenizer.*`` keys
(vocabulary, merges, special ids, chat template); a Hugging Face tokenizer is converted with
``gguf.vocab``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from prunec.errors import ConfigError


@dataclass(frozen=True)
class GGUFFamily:
    """How one Hugging Face ``model_type`` maps to llama.cpp architectures."""

    uniform_arch: str            # gguf.MODEL_ARCH member name for equal widths in every layer
    nonuniform_arch: str | None  # for per-layer widths (None: not expressible in llama.cpp)
    permute_qk: bool             # rotary in halves (HF) -> interleaved pairs (llama.cpp)


FAMILIES: dict[str, GGUFFamily] = {
    "llama": GGUFFamily("LLAMA", "DECI", True),
    "mistral": GGUFFamily("LLAMA", "DECI", True),
    "qwen2": GGUFFamily("QWEN2", None, False),
}

# --gguf-type -> (llama.cpp file type, the type of 2-D weights); 1-D tensors stay float32.
TYPES: dict[str, tuple[str, str]] = {
    "f32": ("ALL_F32", "F32"),
    "f16": ("MOSTLY_F16", "F16"),
    "q8_0": ("MOSTLY_Q8_0", "Q8_0"),
    "q4_0": ("MOSTLY_Q4_0", "Q4_0"),
}


def _rms_norms() -> frozenset:
    import gguf

    t = gguf.MODEL_TENSOR
    return frozenset({t.ATTN_NORM, t.FFN_NORM, t.OUTPUT_NORM})


@dataclass(frozen=True)
class LayerWidths:
    ffn: int
    heads: int
    kv_heads: int


@dataclass(frozen=True)
class GGUFSummary:
    """What was written: the architecture, per-layer widths and tensors kept in a wider type."""

    arch: str
    hidden: int
    head_dim: int
    layers: tuple[LayerWidths, ...]
    gguf_type: str
    fallback: tuple[str, ...]  # tensors whose rows are not a multiple of the block size: kept in F16/F32

    @property
    def uniform(self) -> bool:
        return len(set(self.layers)) == 1


def layer_widths(state: Mapping[str, torch.Tensor], n_layers: int, head_dim: int) -> tuple[LayerWidths, ...]:
    """FFN units, query heads and KV heads of every decoder layer, read from the tensors' shapes."""
    out = []
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out.append(LayerWidths(ffn=state[p + "mlp.down_proj.weight"].shape[1],
                               heads=state[p + "self_attn.q_proj.weight"].shape[0] // head_dim,
                               kv_heads=state[p + "self_attn.k_proj.weight"].shape[0] // head_dim))
    return tuple(out)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: halves -> interleaved pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor(writer: Any, name: str, data: np.ndarray, gguf_type: str, fallback: list[str]) -> None:
    import gguf

    qtype = gguf.GGMLQuantizationType[TYPES[gguf_type][1]]
    if data.ndim < 2 or qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, data.astype(np.float32))
        return
    if qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
        return
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        # llama.cpp quantises along rows; a pruned width that is not a multiple of the block cannot be.
        fallback.append(name)
        writer.add_tensor(name, data.astype(np.float16))
        return
    writer.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), qtype), raw_dtype=qtype)


def _copy_tokenizer_from_gguf(writer: Any, source: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(source)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, field.types[0])


def _add_hf_tokenizer(writer: Any, directory: Path) -> None:
    import gguf

    try:
        vocab = gguf.vocab.BpeVocab(directory)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"cannot convert the tokenizer in {directory} to GGUF ({exc}); "
                          "GGUF export needs a BPE tokenizer.json or a model loaded from a .gguf file") from None
    tokens, toktypes = [], []
    for text, _, toktype in vocab.all_tokens():
        tokens.append(text)
        toktypes.append(int(toktype))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(toktypes)
    gguf.SpecialVocab(directory, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)


def write_gguf(state: Mapping[str, torch.Tensor], config: Any, path: Path, *, gguf_type: str = "f32",
               original_hidden: int | None = None, tokenizer_gguf: Path | None = None,
               tokenizer_dir: Path | None = None, name: str = "") -> GGUFSummary:
    """Write ``state`` (a pruned LLaMA-family model's tensors, Hugging Face names) to ``path``.

    ``config`` is the original model's Hugging Face config (rotary base, epsilon, context length,
    head size); ``original_hidden`` the hidden width the pruned graph normalises over (default:
    the config's).  Raises :class:`ConfigError` for a family or width llama.cpp cannot express.
    """
    import gguf

    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        raise ConfigError(f"GGUF export supports {', '.join(sorted(FAMILIES))} models, not '{model_type}'")
    if gguf_type not in TYPES:
        raise ConfigError(f"unknown GGUF type '{gguf_type}'; choose one of {', '.join(TYPES)}")
    n_layers = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    hidden = state["model.embed_tokens.weight"].shape[1]
    original_hidden = original_hidden or config.hidden_size
    widths = layer_widths(state, n_layers, head_dim)
    uniform = len(set(widths)) == 1
    arch_name = family.uniform_arch if uniform else family.nonuniform_arch
    if arch_name is None:
        raise ConfigError(f"llama.cpp has no {model_type} architecture with per-layer widths; prune with "
                          "--allocation uniform")
    arch = gguf.MODEL_ARCH[arch_name]
    names = gguf.get_tensor_name_map(arch, n_layers)

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name or model_type)
    writer.add_file_type(gguf.LlamaFileType[TYPES[gguf_type][0]])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    per_layer = (lambda f: f(widths[0])) if uniform else (lambda f: [f(w) for w in widths])
    writer.add_feed_forward_length(per_layer(lambda w: w.ffn))
    writer.add_head_count(per_layer(lambda w: w.heads))
    writer.add_head_count_kv(per_layer(lambda w: w.kv_heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None)
                                    or (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps) * original_hidden / hidden)
    writer.add_vocab_size(state["model.embed_tokens.weight"].shape[0])
    if tokenizer_gguf is not None:
        _copy_tokenizer_from_gguf(writer, tokenizer_gguf)
    elif tokenizer_dir is not None:
        _add_hf_tokenizer(writer, tokenizer_dir)
    else:
        writer.add_tokenizer_model("no_vocab")  # token ids in, logits out (a model built without a tokenizer)

    norm_scale = math.sqrt(original_hidden / hidden)
    rms_norms = _rms_norms()
    fallback: list[str] = []
    for key, tensor in state.items():
        if key == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
            continue  # llama.cpp reads a missing output.weight as tied to token_embd
        found = names.get_type_and_name(key, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ConfigError(f"GGUF export: no llama.cpp tensor for {key}; keep the .pt2 program")
        kind, mapped = found
        data = tensor.detach().float().cpu().numpy()
        if kind in rms_norms:
            data = data * norm_scale
        layer = _layer_index(key)
        if family.permute_qk and layer is not None and key.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, widths[layer].heads)
        elif family.permute_qk and layer is not None and key.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, widths[layer].kv_heads)
        _tensor(writer, mapped, data, gguf_type, fallback)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFSummary(gguf.MODEL_ARCH_NAMES[arch], hidden, head_dim, widths, gguf_type, tuple(fallback))


def _layer_index(key: str) -> int | None:
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "model" and parts[1] == "layers":
        return int(parts[2])
    return None
