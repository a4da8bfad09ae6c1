"""Hand-written PyTorch nets for the zoo: patterns that break pruning tools (the rest live in tests/models.py)."""

from __future__ import annotations

import itertools
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import Case, _hand, _image


class UNet(nn.Module):
    """Encoder-decoder with skip connections: down convs, a transposed-conv up path, concat skips."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(12 + 16, 12, 3, padding=1), nn.ReLU())
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec1 = nn.Sequential(nn.Conv2d(12 + 8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


class EinsumAttention(nn.Module):
    """Multi-head attention written with einsum (as in many research codebases)."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 48), nn.GELU(), nn.Linear(48, dim))
        self.out = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).unbind(2)
        att = torch.einsum("bnhd,bmhd->bhnm", q, k) / (d // self.heads) ** 0.5
        o = torch.einsum("bhnm,bmhd->bnhd", att.softmax(-1), v).reshape(b, n, d)
        h = x + self.proj(o)
        return self.out(h + self.ffn(h))


class TransformerEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 32)
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=48, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.enc(self.inp(x)))


class WeightSharing(nn.Module):
    """One linear layer applied twice (ALBERT-style sharing) and a shared conv."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(10, 24)
        self.shared = nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 24))
        self.out = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.shared(h)
        h = h + self.shared(h)
        return self.out(h)


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.lstm = nn.LSTM(16, 24, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(F.relu(self.inp(x)))
        return self.ffn(h)


class GRUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.gru = nn.GRU(16, 20, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(F.relu(self.inp(x)))
        return self.ffn(h)


class TemporalConv(nn.Module):
    """Conv1d stack with BatchNorm1d, dilation and a residual (WaveNet/TCN-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(4, 16, 3, padding=1)
        self.bn = nn.BatchNorm1d(16)
        self.b = nn.Conv1d(16, 24, 3, padding=2, dilation=2)
        self.c = nn.Conv1d(24, 16, 1)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.a(x)))
        h = h + self.c(F.relu(self.b(h)))
        return self.out(h.mean(-1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, project 1x1, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.expand = nn.Sequential(nn.Conv2d(12, 36, 1), nn.BatchNorm2d(36), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(36, 36, 3, padding=1, groups=36), nn.BatchNorm2d(36), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(36, 12, 1), nn.BatchNorm2d(12))
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.project(self.dw(self.expand(h)))
        return self.fc(h.mean((2, 3)))


class Fire(nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, then parallel 1x1 and 3x3 expands concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.squeeze = nn.Conv2d(16, 6, 1)
        self.e1 = nn.Conv2d(6, 10, 1)
        self.e3 = nn.Conv2d(6, 14, 3, padding=1)
        self.fc = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(F.relu(self.stem(x))))
        h = torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1)
        return self.fc(h.mean((2, 3)))


class PixelShuffleNet(nn.Module):
    """Super-resolution head: conv to r^2 * C channels, pixel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 4 * 8, 3, padding=1)
        self.c = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(F.pixel_shuffle(F.relu(self.b(F.relu(self.a(x)))), 2))


class MLPMixer(nn.Module):
    """Token mixing across a transposed sequence dim plus channel mixing."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 24)
        self.norm1 = nn.LayerNorm(24)
        self.tokens = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.norm2 = nn.LayerNorm(24)
        self.channels = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 24))
        self.out = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.tokens(self.norm1(h).transpose(1, 2)).transpose(1, 2)
        h = h + self.channels(self.norm2(h))
        return self.out(h.mean(1))


class GLUBlock(nn.Module):
    """Gated linear units via F.glu (one projection split in two) and a SwiGLU MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 2 * 20)
        self.gate = nn.Linear(20, 32)
        self.up = nn.Linear(20, 32)
        self.down = nn.Linear(32, 20)
        self.out = nn.Linear(20, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.glu(self.inp(x), dim=-1)
        h = h + self.down(F.silu(self.gate(h)) * self.up(h))
        return self.out(h)


class BmmAttention(nn.Module):
    """Attention with bmm, a causal mask via masked_fill, and separate q/k/v heads."""

    def __init__(self, dim: int = 24, heads: int = 3) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.inp = nn.Linear(5, dim)
        self.out = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        b, n, d = h.shape
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, hd).permute(0, 2, 1, 3).reshape(b * self.heads, n, hd)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = torch.bmm(q, k.transpose(1, 2)) / hd ** 0.5
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)
        att = scores.masked_fill(mask, float("-inf")).softmax(-1)
        o = torch.bmm(att, v).view(b, self.heads, n, hd).permute(0, 2, 1, 3).reshape(b, n, d)
        return self.out(h + self.o(o))


class ResNetBasic(nn.Module):
    """Two basic residual blocks with a strided projection shortcut (ResNet-18 style)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.b2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.short = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = F.relu(h + self.b1(h))
        h = F.relu(self.short(h) + self.b2(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class LinearNorm(nn.Module):
    """LeViT's ``Linear`` + ``BatchNorm1d``: the norm runs on the flattened tokens, reshaped back with reshape_as."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out, bias=False)
        self.bn = nn.BatchNorm1d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class LeViTAttention(nn.Module):
    """LeViT attention: per-head q/k/v split of one projection, a learned bias per relative offset."""

    def __init__(self, dim: int, key_dim: int, heads: int, attn_ratio: int, resolution: int) -> None:
        super().__init__()
        self.heads, self.key_dim, self.scale = heads, key_dim, key_dim ** -0.5
        self.value_dim = attn_ratio * key_dim
        self.qkv = LinearNorm(dim, heads * (2 * key_dim + self.value_dim))
        self.proj = LinearNorm(heads * self.value_dim, dim)
        points = list(itertools.product(range(resolution), range(resolution)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(len(points), len(points)),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.heads, -1).split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        att = q @ k.transpose(-2, -1) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        out = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, self.heads * self.value_dim)
        return self.proj(F.hardswish(out))


class LeViT(nn.Module):
    """A LeViT-style vision transformer: conv stem, Linear+BatchNorm1d blocks, BN+Linear head."""

    def __init__(self, dim: int = 32, resolution: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.Hardswish(),
                                  nn.Conv2d(16, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim))
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(nn.ModuleDict({
                "attn": LeViTAttention(dim, key_dim=8, heads=4, attn_ratio=2, resolution=resolution),
                "up": LinearNorm(dim, 2 * dim), "down": LinearNorm(2 * dim, dim)}))
        self.head_bn = nn.BatchNorm1d(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).flatten(2).transpose(1, 2)
        for blk in self.blocks:
            h = h + blk["attn"](h)
            h = h + blk["down"](F.hardswish(blk["up"](h)))
        return self.head(self.head_bn(h.mean(1)))


class GptOssExperts(nn.Module):
    """gpt-oss experts: one 3-D ``gate_up_proj`` whose gate and up columns interleave (``[..., ::2]``/``[..., 1::2]``)."""

    def __init__(self, hidden: int, inter: int, experts: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(experts, hidden, 2 * inter))
        self.gate_up_proj_bias = nn.Parameter(torch.randn(experts, 2 * inter))
        self.down_proj = nn.Parameter(torch.randn(experts, inter, hidden))
        self.down_proj_bias = nn.Parameter(torch.randn(experts, hidden))
        self.alpha, self.limit = 1.702, 7.0

    def forward(self, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n_experts = self.gate_up_proj.shape[0]
        hs = tokens.repeat(n_experts, 1).view(n_experts, -1, tokens.shape[-1])
        gate_up = torch.bmm(hs, self.gate_up_proj) + self.gate_up_proj_bias[..., None, :]
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        gate = gate.clamp(min=None, max=self.limit)
        up = up.clamp(min=-self.limit, max=self.limit)
        glu = gate * torch.sigmoid(gate * self.alpha)
        out = torch.bmm((up + 1) * glu, self.down_proj) + self.down_proj_bias[..., None, :]
        return (out * scores.transpose(0, 1)[..., None]).sum(0)


class GptOssMoE(nn.Module):
    """Top-k router (topk, softmax over the chosen, scatter into dense scores) and gpt-oss experts.

    The router also counts tokens per expert (``histc``) and each token's slot in its expert's
    queue (``cumsum`` over one-hot routing), as capacity-limited MoEs do: index bookkeeping only.
    """

    def __init__(self, hidden: int, inter: int, experts: int = 4, top_k: int = 2) -> None:
        super().__init__()
        self.top_k, self.experts_n = top_k, experts
        self.router = nn.Linear(hidden, experts)
        self.experts = GptOssExperts(hidden, inter, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        tokens = x.reshape(-1, h)
        logits = self.router(tokens)
        top_v, top_i = torch.topk(logits, self.top_k, dim=-1)
        top_v = F.softmax(top_v, dim=1)
        # Capacity bookkeeping: tokens per expert and each choice's queue position (drop past capacity).
        load = torch.histc(top_i.float(), bins=self.experts_n, min=0, max=self.experts_n - 1)
        slot = (F.one_hot(top_i, self.experts_n).flatten(0, 1).cumsum(0) - 1).view(-1, self.top_k, self.experts_n)
        position = (slot * F.one_hot(top_i, self.experts_n)).sum(-1)
        capacity = load.max()
        top_v = top_v * (position < capacity).to(top_v.dtype)
        scores = torch.zeros_like(logits).scatter_(1, top_i, top_v)
        return self.experts(tokens, scores).view(b, s, h)


class GptOssDecoder(nn.Module):
    """A gpt-oss-style decoder: RMSNorm, causal SDPA attention (no sinks, no GQA), top-k MoE FFN."""

    def __init__(self, hidden: int = 32, inter: int = 24, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.inp = nn.Linear(6, hidden)
        self.layers = nn.ModuleList()
        for _ in range(layers):
            self.layers.append(nn.ModuleDict({
                "norm1": nn.RMSNorm(hidden), "qkv": nn.Linear(hidden, 3 * hidden), "o": nn.Linear(hidden, hidden),
                "norm2": nn.RMSNorm(hidden), "moe": GptOssMoE(hidden, inter)}))
        self.norm = nn.RMSNorm(hidden)
        self.out = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        b, s, d = h.shape
        for layer in self.layers:
            q, k, v = layer["qkv"](layer["norm1"](h)).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d)
            h = h + layer["o"](att)
            h = h + layer["moe"](layer["norm2"](h))
        return self.out(self.norm(h))


class ComplexRotaryDecoder(nn.Module):
    """Meta's reference LLaMA attention: rotary through ``polar`` / ``view_as_complex`` / ``view_as_real``."""

    def __init__(self, dim: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.heads, hd = heads, dim // heads
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd)), persistent=False)
        self.inp = nn.Linear(6, dim)
        self.layers = nn.ModuleList(nn.ModuleDict({
            "norm1": nn.RMSNorm(dim), "wq": nn.Linear(dim, dim, bias=False), "wk": nn.Linear(dim, dim, bias=False),
            "wv": nn.Linear(dim, dim, bias=False), "wo": nn.Linear(dim, dim, bias=False), "norm2": nn.RMSNorm(dim),
            "w1": nn.Linear(dim, 48, bias=False), "w3": nn.Linear(dim, 48, bias=False),
            "w2": nn.Linear(48, dim, bias=False)}) for _ in range(layers))
        self.out = nn.Linear(dim, 3)

    def _rotate(self, t: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        tc = torch.view_as_complex(t.float().reshape(*t.shape[:-1], -1, 2))
        return torch.view_as_real(tc * freqs_cis[None, :, None, :]).flatten(3).type_as(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        b, s, d = h.shape
        freqs = torch.outer(torch.arange(s, dtype=torch.float32), self.inv_freq)
        freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
        for layer in self.layers:
            n = layer["norm1"](h)
            q = self._rotate(layer["wq"](n).view(b, s, self.heads, -1), freqs_cis)
            k = self._rotate(layer["wk"](n).view(b, s, self.heads, -1), freqs_cis)
            v = layer["wv"](n).view(b, s, self.heads, -1)
            att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True)
            h = h + layer["wo"](att.transpose(1, 2).reshape(b, s, d))
            n = layer["norm2"](h)
            h = h + layer["w2"](F.silu(layer["w1"](n)) * layer["w3"](n))
        return self.out(h)


class Rotary2DViT(nn.Module):
    """A ViT with 2-D axial rotary embeddings: positions from ``meshgrid``, angle tables ``tile``d."""

    def __init__(self, dim: int = 32, heads: int = 4, grid: int = 4) -> None:
        super().__init__()
        self.heads, self.grid, hd = heads, grid, dim // heads
        self.register_buffer("inv_freq", 1.0 / (100 ** (torch.arange(0, hd // 2, 2).float() / (hd // 2))),
                             persistent=False)
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "norm1": nn.LayerNorm(dim), "qkv": nn.Linear(dim, 3 * dim), "proj": nn.Linear(dim, dim),
            "norm2": nn.LayerNorm(dim), "fc1": nn.Linear(dim, 64), "fc2": nn.Linear(64, dim)}) for _ in range(2))
        self.head = nn.Linear(dim, 5)

    @staticmethod
    def _rotate_half(t: torch.Tensor) -> torch.Tensor:
        a, b = t.chunk(2, -1)
        return torch.cat([-b, a], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)
        b, n, d = h.shape
        ys, xs = torch.meshgrid(torch.arange(self.grid), torch.arange(self.grid), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], -1).float()  # [n, 2]
        ang = (pos[:, :, None] * self.inv_freq).flatten(1)  # [n, hd / 2]: y then x frequencies
        ang = torch.tile(ang, (1, 2))  # [n, hd], rotate-half layout
        cos, sin = ang.cos(), ang.sin()
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["norm1"](h)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            q = q * cos + self._rotate_half(q) * sin
            k = k * cos + self._rotate_half(k) * sin
            att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
            h = h + blk["proj"](att)
            h = h + blk["fc2"](F.gelu(blk["fc1"](blk["norm2"](h))))
        return self.head(h.mean(1))


class InplaceConcat(nn.Module):
    """Branches written into slices of a preallocated buffer with ``copy_`` (a concat without ``cat``)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.a = nn.Linear(16, 20)
        self.b = nn.Linear(16, 12)
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        buf = h.new_zeros(h.shape[0], 32)
        buf[:, :20].copy_(torch.relu(self.a(h)))
        buf[:, 20:].copy_(torch.relu(self.b(h)))
        return self.out(buf)


NET_ZOO: dict[str, Callable[[], Case]] = {
    "unet_skips": _hand(UNet, lambda: _image(16)),
    "einsum_attention": _hand(EinsumAttention, lambda: torch.randn(2, 6, 32)),
    "transformer_encoder_layer": _hand(TransformerEncoder, lambda: torch.randn(2, 5, 6)),
    "weight_sharing": _hand(WeightSharing, lambda: torch.randn(3, 10)),
    "lstm": _hand(LSTMNet, lambda: torch.randn(2, 7, 6)),
    "gru": _hand(GRUNet, lambda: torch.randn(2, 7, 6)),
    "temporal_conv1d": _hand(TemporalConv, lambda: torch.randn(2, 4, 20)),
    "inverted_residual": _hand(InvertedResidual, lambda: _image(8)),
    "squeezenet_fire": _hand(Fire, lambda: _image(8)),
    "pixel_shuffle": _hand(PixelShuffleNet, lambda: _image(8)),
    "mlp_mixer": _hand(MLPMixer, lambda: torch.randn(2, 8, 6)),
    "glu_swiglu": _hand(GLUBlock, lambda: torch.randn(2, 5, 8)),
    "bmm_causal_attention": _hand(BmmAttention, lambda: torch.randn(2, 6, 5)),
    "resnet_basic": _hand(ResNetBasic, lambda: _image(8)),
    "levit": _hand(LeViT, lambda: _image(12)),
    "gpt_oss_moe": _hand(GptOssDecoder, lambda: torch.randn(2, 5, 6)),
    "complex_rotary": _hand(ComplexRotaryDecoder, lambda: torch.randn(2, 6, 6)),
    "rotary_2d_vit": _hand(Rotary2DViT, lambda: _image(16)),
    "inplace_concat": _hand(InplaceConcat, lambda: torch.randn(3, 6)),
}
