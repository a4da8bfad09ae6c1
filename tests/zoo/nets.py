"""Hand-written PyTorch nets for the zoo: patterns that break pruning tools (the rest live in tests/models.py)."""

from __future__ import annotations

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
}
