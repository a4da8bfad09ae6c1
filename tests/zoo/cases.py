"""The architecture zoo: every case, with what prunec is expected to leave unhandled and why.

A case passes when pruning 30% of every prunable group (all kinds) of the tiny
random-weight model is exact under the dead-unit oracle and removes at least
``min_removed`` of the parameters.  ``unhandled`` lists the analysis's
"no rule / rule failed" reasons the case may show: the units those ops touch are
frozen.  It is an upper bound: a reason not in the list (a new op without a rule, or
one that lost its rule) fails the case; a listed one that no longer appears does not.  ``limitation`` says in words
what is frozen where that keeps a case below 10%.  Other frozen reasons (model
inputs and outputs, ids-addressed embedding rows, attention scales) are the
semantics of the model, not gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from models import HAND_CASES, HF_CASES, Case
from zoo.hf_cases import HF_ZOO
from zoo.nets import NET_ZOO

# (The static trace wrapped rotary tables, built under no_grad, in wrap_with_set_grad_enabled, which had
# no rule; the dynamic trace prune() uses inlines them, so no decoder records it any more.)
LSTM_REASON = "no rule for aten.lstm.input"
# aten.diff on position ids (HF causal-mask helpers): only ids are touched, no weights.
DIFF = "no rule for aten.diff.default"


@dataclass(frozen=True)
class ZooCase:
    name: str
    family: str  # decoder | encoder | vision | hand
    build: Callable[[], Case]
    unhandled: tuple[str, ...] = ()
    min_removed: float = 0.10
    limitation: str = ""
    # A known wrong result (the oracle finds a difference): the test is a strict xfail with this reason.
    known_bug: str = ""
    onnx: bool = False  # in the default run's ONNX subset (PRUNEC_ZOO_ONNX=all runs every case)


def _c(name: str, family: str, build: Callable[[], Case], *unhandled: str, **kw) -> ZooCase:
    return ZooCase(name, family, build, tuple(sorted(unhandled)), **kw)


F = {**HF_CASES, **HF_ZOO, **HAND_CASES, **NET_ZOO}

CASES: list[ZooCase] = [
    # --- decoders ---
    _c("llama_gqa", "decoder", F["llama_gqa"], DIFF, onnx=True),
    _c("llama_tied", "decoder", F["llama_tied"], DIFF),
    _c("mistral", "decoder", F["mistral"], DIFF),
    _c("mixtral_moe", "decoder", F["mixtral_moe"], DIFF, onnx=True),
    _c("qwen2", "decoder", F["qwen2"], DIFF),
    _c("qwen3", "decoder", F["qwen3"], DIFF),
    _c("qwen3_moe", "decoder", F["qwen3_moe"], DIFF),
    # Interleaved gate/up columns (gate_up[..., ::2], [..., 1::2]) of one 3-D expert weight.
    _c("gpt_oss", "decoder", F["gpt_oss"]),
    _c("gemma", "decoder", F["gemma"], DIFF),
    _c("gemma2", "decoder", F["gemma2"], DIFF),
    _c("phi3", "decoder", F["phi3"], DIFF, onnx=True),
    _c("phi", "decoder", F["phi"], DIFF),
    _c("gpt2", "decoder", F["gpt2"], DIFF, onnx=True),
    _c("gpt_neox", "decoder", F["gpt_neox"], DIFF),
    _c("gptj", "decoder", F["gptj"], DIFF),
    _c("codegen", "decoder", F["codegen"], DIFF),
    _c("opt", "decoder", F["opt"]),
    _c("falcon", "decoder", F["falcon"], DIFF, onnx=True),
    _c("bloom", "decoder", F["bloom"], "no rule for aten.baddbmm.default"),
    _c("starcoder2", "decoder", F["starcoder2"], DIFF),
    _c("olmo", "decoder", F["olmo"], DIFF),
    _c("granite", "decoder", F["granite"], DIFF),
    _c("stablelm", "decoder", F["stablelm"], DIFF),
    # --- encoders ---
    _c("bert", "encoder", F["bert"], onnx=True),
    _c("roberta", "encoder", F["roberta"]),
    _c("xlm_roberta", "encoder", F["xlm_roberta"]),
    _c("electra", "encoder", F["electra"]),
    _c("mpnet", "encoder", F["mpnet"]),
    _c("distilbert", "encoder", F["distilbert"]),
    _c("albert", "encoder", F["albert"]),
    _c("t5_encoder", "encoder", F["t5_encoder"], onnx=True),
    _c("whisper_encoder", "encoder", F["whisper_encoder"]),
    # Weight-normed positional conv (aten._weight_norm over the kernel dim).
    _c("wav2vec2", "encoder", F["wav2vec2"]),
    # --- vision ---
    _c("vit", "vision", F["vit"]),
    _c("deit", "vision", F["deit"]),
    _c("dinov2", "vision", F["dinov2"]),
    # Relative-position index built with meshgrid, copy_ and fill_: position tables only.
    _c("beit", "vision", F["beit"]),
    _c("clip_vision", "vision", F["clip_vision"]),
    _c("swin", "vision", F["swin"], onnx=True),
    _c("resnet", "vision", F["resnet"], onnx=True),
    _c("convnext", "vision", F["convnext"]),
    _c("convnext_v2", "vision", F["convnext_v2"]),
    _c("mobilenet_v1", "vision", F["mobilenet_v1"]),
    _c("mobilenet_v2", "vision", F["mobilenet_v2"]),
    _c("efficientnet", "vision", F["efficientnet"], onnx=True),
    _c("regnet", "vision", F["regnet"]),
    _c("mobilevit", "vision", F["mobilevit"]),
    _c("poolformer", "vision", F["poolformer"]),
    _c("segformer", "vision", F["segformer"]),
    # --- hand-written ---
    _c("residual_mlp", "hand", F["residual_mlp"]),
    _c("resnet_basic", "hand", F["resnet_basic"]),
    # LeViT: Linear + BatchNorm1d over flatten(0, 1), reshaped back with reshape_as.
    _c("levit", "hand", F["levit"], onnx=True),
    # gpt-oss-style MoE: 3-D gate_up_proj split by strided slices; router with topk, histc, cumsum, scatter_.
    _c("gpt_oss_moe", "hand", F["gpt_oss_moe"], onnx=True),
    # Complex rotary (polar, view_as_complex/real): the real/imaginary pair and q/k head_dim stay frozen.
    _c("complex_rotary", "hand", F["complex_rotary"]),
    # 2-D axial rotary: meshgrid positions, tiled angle tables; q/k head_dim stays frozen (attention scale).
    _c("rotary_2d_vit", "hand", F["rotary_2d_vit"]),
    # A concat written with copy_ into slices of a preallocated buffer.
    _c("inplace_concat", "hand", F["inplace_concat"]),
    _c("densenet_concat", "hand", F["densenet_concat"], onnx=True),
    _c("channel_shuffle", "hand", F["channel_shuffle"], onnx=True),
    _c("c2f_chunk", "hand", F["c2f_chunk"], onnx=True),
    _c("split_sizes", "hand", F["split_sizes"]),
    _c("se_block", "hand", F["se_block"]),
    _c("unet_skips", "hand", F["unet_skips"], onnx=True),
    _c("depthwise_separable", "hand", F["depthwise_separable"]),
    _c("inverted_residual", "hand", F["inverted_residual"]),
    _c("squeezenet_fire", "hand", F["squeezenet_fire"]),
    _c("conv_flatten_linear", "hand", F["conv_flatten_linear"]),
    _c("group_norm", "hand", F["group_norm"]),
    _c("temporal_conv1d", "hand", F["temporal_conv1d"]),
    _c("pixel_shuffle", "hand", F["pixel_shuffle"], "no rule for aten.pixel_shuffle.default"),
    _c("einsum_attention", "hand", F["einsum_attention"], onnx=True),
    _c("multihead_attention", "hand", F["multihead_attention"], onnx=True),
    _c("transformer_encoder_layer", "hand", F["transformer_encoder_layer"], onnx=True),
    _c("bmm_causal_attention", "hand", F["bmm_causal_attention"]),
    _c("tied_lm_head", "hand", F["tied_lm_head"]),
    _c("weight_sharing", "hand", F["weight_sharing"]),
    _c("glu_swiglu", "hand", F["glu_swiglu"], "no rule for aten.glu.default"),
    _c("mlp_mixer", "hand", F["mlp_mixer"]),
    _c("lstm", "hand", F["lstm"], LSTM_REASON, min_removed=0.03, limitation=(
        "aten.lstm has no rule: the LSTM's input and hidden widths are frozen; the FFN after it is pruned"), onnx=True),
    _c("gru", "hand", F["gru"], "no rule for aten.gru.input", min_removed=0.03, limitation=(
        "aten.gru has no rule: the GRU's input and hidden widths are frozen; the FFN after it is pruned")),
]

BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "duplicate zoo case names"
