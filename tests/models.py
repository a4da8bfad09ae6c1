"""Tiny random-weight models for the tests: Hugging Face configs and hand-written nets.

Each factory returns ``(model, example_args, example_kwargs)``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Case = tuple[nn.Module, tuple, dict[str, Any]]


def _ids(vocab: int = 96, seq: int = 8) -> torch.Tensor:
    return torch.randint(0, vocab, (2, seq), generator=torch.Generator().manual_seed(0))


def _image(size: int = 32, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


def _hf(config_cls: str, model_cls: str, **cfg: Any) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**cfg)
    return getattr(transformers, model_cls)(config).eval()


DECODER = dict(vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64)


def llama_gqa() -> Case:
    return _hf("LlamaConfig", "LlamaForCausalLM", **DECODER), (_ids(),), {}


def llama_tied() -> Case:
    return _hf("LlamaConfig", "LlamaForCausalLM", tie_word_embeddings=True, **DECODER), (_ids(),), {}


def qwen2() -> Case:
    return _hf("Qwen2Config", "Qwen2ForCausalLM", **DECODER), (_ids(),), {}


def gemma() -> Case:
    return _hf("GemmaConfig", "GemmaForCausalLM", head_dim=8, **DECODER), (_ids(),), {}


def phi3() -> Case:
    cfg = dict(DECODER, pad_token_id=0)
    return _hf("Phi3Config", "Phi3ForCausalLM", **cfg), (_ids(),), {}


def gpt2() -> Case:
    return _hf("GPT2Config", "GPT2LMHeadModel", vocab_size=96, n_embd=48, n_layer=2, n_head=6, n_positions=64), (_ids(),), {}


def bert() -> Case:
    model = _hf("BertConfig", "BertModel", vocab_size=96, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                intermediate_size=64, max_position_embeddings=64)
    return model, (_ids(),), {}


def vit() -> Case:
    model = _hf("ViTConfig", "ViTForImageClassification", image_size=32, patch_size=8, hidden_size=48,
                num_hidden_layers=2, num_attention_heads=6, intermediate_size=64, num_labels=5)
    return model, (_image(),), {}


def resnet() -> Case:
    model = _hf("ResNetConfig", "ResNetForImageClassification", embedding_size=16, hidden_sizes=[16, 32],
                depths=[1, 1], layer_type="bottleneck", num_labels=5)
    return model, (_image(),), {}


def convnext() -> Case:
    model = _hf("ConvNextConfig", "ConvNextForImageClassification", num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                num_labels=5)
    return model, (_image(),), {}


def mobilenet_v2() -> Case:
    model = _hf("MobileNetV2Config", "MobileNetV2ForImageClassification", image_size=32, depth_multiplier=0.35,
                num_labels=5)
    return model, (_image(),), {}


# --- hand-written nets -----------------------------------------------------------------------


class ResidualMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(12, 24)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 24)) for _ in range(2))
        self.norm = nn.LayerNorm(24)
        self.out = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(self.norm(h))


class DenseNetConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))
        self.c2 = nn.Sequential(nn.BatchNorm2d(14), nn.ReLU(), nn.Conv2d(14, 6, 3, padding=1))
        self.head = nn.Linear(20, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.c1(x)], 1)
        x = torch.cat([x, self.c2(x)], 1)
        return self.head(x.mean((2, 3)))


class ChannelShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.c = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.a(x))
        n, c, h, w = x.shape
        x = x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        x = F.relu(self.b(x))
        return self.fc(self.c(x).mean((2, 3)))


class C2f(nn.Module):
    """YOLOv8's C2f: chunk the conv output, run bottlenecks on one half, concat everything."""

    def __init__(self) -> None:
        super().__init__()
        self.cv1 = nn.Conv2d(3, 16, 1)
        self.m = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.SiLU()) for _ in range(2))
        self.cv2 = nn.Conv2d(32, 12, 1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.fc(self.cv2(torch.cat(y, 1)).mean((2, 3)))


class SplitSizes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 30)
        self.b = nn.Linear(12, 6)
        self.c = nn.Linear(18, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = self.a(x).split([12, 18], dim=-1)
        return self.b(F.relu(p)) + self.c(torch.tanh(q))


class DepthwiseSeparable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU6())
        self.grouped = nn.Conv2d(24, 24, 3, padding=1, groups=3)
        self.fc = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(self.pw(self.dw(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ConvFlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return self.out(F.relu(self.fc(torch.flatten(x, 1))))


class MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 32))
        self.out = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        h = h + a
        return self.out(h + self.ffn(h))


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 24)
        self.mlp = nn.Sequential(nn.Linear(24, 40), nn.SiLU(), nn.Linear(40, 24))
        self.head = nn.Linear(24, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        return self.head(h + self.mlp(h))


class SEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.head(x * s).mean((2, 3))


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(F.relu(self.gn(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def _hand(cls: type[nn.Module], example: Callable[[], torch.Tensor]) -> Callable[[], Case]:
    def make() -> Case:
        torch.manual_seed(0)
        return cls().eval(), (example(),), {}

    make.__name__ = cls.__name__
    return make


HF_CASES: dict[str, Callable[[], Case]] = {
    "llama_gqa": llama_gqa, "llama_tied": llama_tied, "qwen2": qwen2, "gemma": gemma, "phi3": phi3,
    "gpt2": gpt2, "bert": bert, "vit": vit, "resnet": resnet, "convnext": convnext, "mobilenet_v2": mobilenet_v2,
}

HAND_CASES: dict[str, Callable[[], Case]] = {
    "residual_mlp": _hand(ResidualMLP, lambda: torch.randn(3, 12)),
    "densenet_concat": _hand(DenseNetConcat, lambda: _image(8)),
    "channel_shuffle": _hand(ChannelShuffle, lambda: _image(8)),
    "c2f_chunk": _hand(C2f, lambda: _image(8)),
    "split_sizes": _hand(SplitSizes, lambda: torch.randn(3, 10)),
    "depthwise_separable": _hand(DepthwiseSeparable, lambda: _image(8)),
    "conv_flatten_linear": _hand(ConvFlattenLinear, lambda: _image(8)),
    "multihead_attention": _hand(MHA, lambda: torch.randn(2, 5, 6)),
    "tied_lm_head": _hand(TiedLM, lambda: torch.randint(0, 50, (2, 7))),
    "se_block": _hand(SEBlock, lambda: _image(8)),
    "group_norm": _hand(GroupNormNet, lambda: _image(8)),
}

ALL_CASES = {**HF_CASES, **HAND_CASES}


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every tensor O(1)-scale random values so that output differences are meaningful.

    Hugging Face initialisers use tiny weights (std 0.02), which make outputs so small that an
    absolute tolerance would test nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    # Parameters and batch-norm statistics only: other buffers are constants (rotary frequencies,
    # Gemma's embedding scale) that the model's definition fixes.
    tensors = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if "running_" in n]
    for name, t in tensors:
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        elif t.dim() >= 2:
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=gen) * 0.5 + (1.0 if "norm" in name or "ln" in name else 0.0))
    return model

# Module-level factories for every case, so the CLI can load them as ``models:<name>``.
globals().update(HAND_CASES)
