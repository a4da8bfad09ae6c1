"""Tiny random-weight Hugging Face models for the zoo, built from ``transformers`` config classes.

Each factory returns ``(model, example_args, example_kwargs)`` like the cases of ``tests/models.py``
(which the zoo reuses).  Sizes are tiny (hidden <= 64, two layers) so the whole zoo runs in minutes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from models import DECODER, Case, _hf, _ids, _image

# The shared decoder shape minus the LLaMA-only keys, for configs that name them differently.
_HIDDEN, _FFN, _LAYERS, _HEADS, _KV = 48, 64, 2, 6, 2


def _features(n_mels: int = 16, frames: int = 32) -> torch.Tensor:
    return torch.randn(2, n_mels, frames, generator=torch.Generator().manual_seed(0))


def _decoder(config: str, model: str, **extra: Any) -> Callable[[], Case]:
    def make() -> Case:
        return _hf(config, model, **{**DECODER, **extra}), (_ids(),), {}

    make.__name__ = config.removesuffix("Config").lower()
    return make


def mixtral() -> Case:
    cfg = dict(DECODER, num_local_experts=4, num_experts_per_tok=2, experts_implementation="batched_mm")
    return _hf("MixtralConfig", "MixtralForCausalLM", **cfg), (_ids(),), {}


def qwen3_moe() -> Case:
    cfg = dict(DECODER, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1, experts_implementation="batched_mm",
               head_dim=8)
    return _hf("Qwen3MoeConfig", "Qwen3MoeForCausalLM", **cfg), (_ids(),), {}


def gpt_oss() -> Case:
    # Experts are one 3-D gate_up_proj with interleaved gate/up columns; batched_mm is the traceable path.
    cfg = dict(DECODER, num_local_experts=4, num_experts_per_tok=2, experts_implementation="batched_mm", head_dim=8,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return _hf("GptOssConfig", "GptOssForCausalLM", **cfg), (_ids(),), {}


def gemma2() -> Case:
    cfg = dict(DECODER, head_dim=8, sliding_window=16)
    return _hf("Gemma2Config", "Gemma2ForCausalLM", **cfg), (_ids(),), {}


def gpt_neox() -> Case:
    model = _hf("GPTNeoXConfig", "GPTNeoXForCausalLM", vocab_size=96, hidden_size=_HIDDEN, intermediate_size=_FFN,
                num_hidden_layers=_LAYERS, num_attention_heads=_HEADS, max_position_embeddings=64, rotary_pct=0.5)
    return model, (_ids(),), {}


def gptj() -> Case:
    model = _hf("GPTJConfig", "GPTJForCausalLM", vocab_size=96, n_embd=_HIDDEN, n_inner=_FFN, n_layer=_LAYERS,
                n_head=_HEADS, rotary_dim=4, n_positions=64)
    return model, (_ids(),), {}


def opt() -> Case:
    model = _hf("OPTConfig", "OPTForCausalLM", vocab_size=96, hidden_size=_HIDDEN, ffn_dim=_FFN,
                num_hidden_layers=_LAYERS, num_attention_heads=_HEADS, max_position_embeddings=64,
                word_embed_proj_dim=_HIDDEN)
    return model, (_ids(),), {}


def falcon() -> Case:
    model = _hf("FalconConfig", "FalconForCausalLM", vocab_size=96, hidden_size=_HIDDEN, num_hidden_layers=_LAYERS,
                num_attention_heads=_HEADS, num_kv_heads=_KV, new_decoder_architecture=True, ffn_hidden_size=_FFN)
    return model, (_ids(),), {}


def bloom() -> Case:
    model = _hf("BloomConfig", "BloomForCausalLM", vocab_size=96, hidden_size=_HIDDEN, n_layer=_LAYERS, n_head=_HEADS)
    return model, (_ids(),), {}


def phi() -> Case:
    model = _hf("PhiConfig", "PhiForCausalLM", vocab_size=96, hidden_size=_HIDDEN, intermediate_size=_FFN,
                num_hidden_layers=_LAYERS, num_attention_heads=_HEADS, max_position_embeddings=64,
                partial_rotary_factor=0.5)
    return model, (_ids(),), {}


def codegen() -> Case:
    model = _hf("CodeGenConfig", "CodeGenForCausalLM", vocab_size=96, n_embd=32, n_inner=_FFN, n_layer=_LAYERS,
                n_head=4, rotary_dim=4, n_positions=64, n_ctx=64)
    return model, (_ids(),), {}


def starcoder2() -> Case:
    cfg = dict(DECODER, sliding_window=None)
    return _hf("Starcoder2Config", "Starcoder2ForCausalLM", **cfg), (_ids(),), {}


# --- encoders ---------------------------------------------------------------------------------

ENCODER = dict(vocab_size=96, hidden_size=_HIDDEN, num_hidden_layers=_LAYERS, num_attention_heads=_HEADS,
               intermediate_size=_FFN, max_position_embeddings=64)


def _encoder(config: str, model: str, **extra: Any) -> Callable[[], Case]:
    def make() -> Case:
        return _hf(config, model, **{**ENCODER, **extra}), (_ids(),), {}

    make.__name__ = config.removesuffix("Config").lower()
    return make


def distilbert() -> Case:
    model = _hf("DistilBertConfig", "DistilBertModel", vocab_size=96, dim=_HIDDEN, n_layers=_LAYERS, n_heads=_HEADS,
                hidden_dim=_FFN, max_position_embeddings=64)
    return model, (_ids(),), {}


def albert() -> Case:
    model = _hf("AlbertConfig", "AlbertModel", embedding_size=16, **ENCODER)
    return model, (_ids(),), {}


def t5_encoder() -> Case:
    model = _hf("T5Config", "T5EncoderModel", vocab_size=96, d_model=_HIDDEN, d_kv=8, d_ff=_FFN, num_layers=_LAYERS,
                num_heads=_HEADS)
    return model, (_ids(),), {}


def wav2vec2() -> Case:
    # The positional conv embedding is weight-normed over its kernel dim (torch._weight_norm, dim=2).
    model = _hf("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification", num_labels=3, hidden_size=32,
                num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, conv_dim=(16, 16),
                conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    return model, (torch.randn(2, 400, generator=torch.Generator().manual_seed(0)),), {}


def whisper_encoder() -> Case:
    model = _hf("WhisperConfig", "WhisperForAudioClassification", num_mel_bins=16, d_model=_HIDDEN,
                encoder_layers=_LAYERS, encoder_attention_heads=_HEADS, encoder_ffn_dim=_FFN,
                max_source_positions=16, num_labels=3, decoder_layers=1, decoder_attention_heads=_HEADS,
                decoder_ffn_dim=_FFN, vocab_size=96)
    return model, (_features(),), {}


# --- vision -----------------------------------------------------------------------------------

VIT = dict(image_size=32, patch_size=8, hidden_size=_HIDDEN, num_hidden_layers=_LAYERS, num_attention_heads=_HEADS,
           intermediate_size=_FFN)


def deit() -> Case:
    return _hf("DeiTConfig", "DeiTForImageClassification", num_labels=5, **VIT), (_image(),), {}


def dinov2() -> Case:
    cfg = {k: v for k, v in VIT.items() if k != "intermediate_size"}
    return _hf("Dinov2Config", "Dinov2Model", mlp_ratio=2, **cfg), (_image(),), {}


def beit() -> Case:
    return _hf("BeitConfig", "BeitForImageClassification", num_labels=5, use_relative_position_bias=True,
               **VIT), (_image(),), {}


def clip_vision() -> Case:
    return _hf("CLIPVisionConfig", "CLIPVisionModel", **VIT), (_image(),), {}


def swin() -> Case:
    model = _hf("SwinConfig", "SwinForImageClassification", image_size=32, patch_size=2, embed_dim=16, depths=[1, 1],
                num_heads=[2, 4], window_size=4, num_labels=5)
    return model, (_image(),), {}


def efficientnet() -> Case:
    model = _hf("EfficientNetConfig", "EfficientNetForImageClassification", image_size=32, width_coefficient=0.25,
                depth_coefficient=0.25, hidden_dim=320, num_labels=5)
    return model, (_image(),), {}


def regnet() -> Case:
    model = _hf("RegNetConfig", "RegNetForImageClassification", embedding_size=16, hidden_sizes=[16, 32],
                depths=[1, 1], groups_width=8, num_labels=5)
    return model, (_image(),), {}


def convnext_v2() -> Case:
    model = _hf("ConvNextV2Config", "ConvNextV2ForImageClassification", num_stages=2, hidden_sizes=[16, 32],
                depths=[1, 1], num_labels=5)
    return model, (_image(),), {}


def mobilenet_v1() -> Case:
    model = _hf("MobileNetV1Config", "MobileNetV1ForImageClassification", image_size=32, depth_multiplier=0.25,
                num_labels=5)
    return model, (_image(),), {}


def mobilevit() -> Case:
    model = _hf("MobileViTConfig", "MobileViTForImageClassification", image_size=32, patch_size=2,
                hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], num_attention_heads=2,
                num_labels=5)
    return model, (_image(),), {}


def poolformer() -> Case:
    model = _hf("PoolFormerConfig", "PoolFormerForImageClassification", hidden_sizes=[16, 32], depths=[1, 1],
                num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2], padding=[2, 1], num_labels=5)
    return model, (_image(),), {}


def segformer() -> Case:
    model = _hf("SegformerConfig", "SegformerForSemanticSegmentation", num_encoder_blocks=2, depths=[1, 1],
                sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2], patch_sizes=[7, 3],
                strides=[4, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=3)
    return model, (_image(),), {}


HF_ZOO: dict[str, Callable[[], Case]] = {
    # decoders
    "mistral": _decoder("MistralConfig", "MistralForCausalLM", sliding_window=None),
    "mixtral_moe": mixtral,
    "qwen3": _decoder("Qwen3Config", "Qwen3ForCausalLM", head_dim=8),
    "qwen3_moe": qwen3_moe,
    "gpt_oss": gpt_oss,
    "gemma2": gemma2,
    "gpt_neox": gpt_neox,
    "gptj": gptj,
    "opt": opt,
    "falcon": falcon,
    "bloom": bloom,
    "phi": phi,
    "codegen": codegen,
    "starcoder2": starcoder2,
    "olmo": _decoder("OlmoConfig", "OlmoForCausalLM"),
    "granite": _decoder("GraniteConfig", "GraniteForCausalLM"),
    "stablelm": _decoder("StableLmConfig", "StableLmForCausalLM"),
    # encoders
    "roberta": _encoder("RobertaConfig", "RobertaModel", pad_token_id=1),
    "xlm_roberta": _encoder("XLMRobertaConfig", "XLMRobertaForSequenceClassification", pad_token_id=1, num_labels=3),
    "electra": _encoder("ElectraConfig", "ElectraModel", embedding_size=32),
    "mpnet": _encoder("MPNetConfig", "MPNetModel"),
    "distilbert": distilbert,
    "albert": albert,
    "t5_encoder": t5_encoder,
    "whisper_encoder": whisper_encoder,
    "wav2vec2": wav2vec2,
    # vision
    "deit": deit,
    "dinov2": dinov2,
    "beit": beit,
    "clip_vision": clip_vision,
    "swin": swin,
    "efficientnet": efficientnet,
    "regnet": regnet,
    "convnext_v2": convnext_v2,
    "mobilenet_v1": mobilenet_v1,
    "mobilevit": mobilevit,
    "poolformer": poolformer,
    "segformer": segformer,
}
