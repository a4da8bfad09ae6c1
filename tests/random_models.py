"""Random small DAG models over the op families the analysis supports (for hypothesis).

A model is a *program*: a list of op specs over a growing list of values, each a
``(batch, seq, width)`` tensor.  Ops: linear, activation, residual add, gating
multiply, concat (two or three operands, uneven widths), uneven split, chunk,
layer/RMS norm, multi-head attention (reshape into heads, SDPA or einsum, merge back),
grouped-query attention (fewer KV heads, repeated to the query heads), a
broadcasting per-channel scale, a broadcasting per-token gate (``x * sigmoid(w.x)``,
a ``(b, s, 1)`` factor), mean-centering (``x - x.mean(-1, keepdim=True)``), and
residual chains (``h = h + mlp(h)`` repeated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

ACTS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


@dataclass(frozen=True)
class Op:
    kind: str
    args: tuple


class ProgramModel(nn.Module):
    def __init__(self, in_width: int, program: list[Op], out_width: int) -> None:
        super().__init__()
        self.program = program
        self.layers = nn.ModuleDict()
        widths = [in_width]
        for i, op in enumerate(program):
            k, a = op.kind, op.args
            if k == "linear":
                self.layers[str(i)] = nn.Linear(widths[a[0]], a[1])
                widths.append(a[1])
            elif k in ("act", "norm", "rms", "scale"):
                if k == "norm":
                    self.layers[str(i)] = nn.LayerNorm(widths[a[0]])
                elif k == "rms":
                    self.layers[str(i)] = nn.RMSNorm(widths[a[0]])
                elif k == "scale":
                    self.layers[str(i)] = nn.Linear(1, 1)  # placeholder holder for a per-channel scale
                    self.register_parameter(f"scale{i}", nn.Parameter(torch.randn(widths[a[0]])))
                widths.append(widths[a[0]])
            elif k in ("add", "mul"):
                widths.append(widths[a[0]])
            elif k == "cat":
                widths.append(widths[a[0]] + widths[a[1]])
            elif k == "split":
                widths += [a[1], widths[a[0]] - a[1]]
            elif k == "chunk":
                widths += [widths[a[0]] // 2] * 2
            elif k in ("attn", "eattn"):
                src, heads, head_dim, v_dim = a
                w = widths[src]
                self.layers[str(i)] = nn.ModuleList([nn.Linear(w, heads * head_dim), nn.Linear(w, heads * head_dim),
                                                     nn.Linear(w, heads * v_dim), nn.Linear(heads * v_dim, w)])
                widths.append(w)
            elif k == "gqa":
                src, kv, rep, head_dim = a
                w = widths[src]
                self.layers[str(i)] = nn.ModuleList([nn.Linear(w, kv * rep * head_dim), nn.Linear(w, kv * head_dim),
                                                     nn.Linear(w, kv * head_dim), nn.Linear(kv * rep * head_dim, w)])
                widths.append(w)
            elif k == "gate":
                self.layers[str(i)] = nn.Linear(widths[a[0]], 1)
                widths.append(widths[a[0]])
            elif k == "center":
                widths.append(widths[a[0]])
            elif k == "cat3":
                widths.append(sum(widths[j] for j in a))
            elif k == "chain":
                src, hidden, depth = a
                w = widths[src]
                self.layers[str(i)] = nn.ModuleList(nn.Sequential(nn.Linear(w, hidden), nn.GELU(), nn.Linear(hidden, w))
                                                    for _ in range(depth))
                widths.append(w)
        self.widths = widths
        self.head = nn.Linear(widths[-1], out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals = [x]
        for i, op in enumerate(self.program):
            k, a = op.kind, op.args
            if k == "linear":
                vals.append(self.layers[str(i)](vals[a[0]]))
            elif k == "act":
                vals.append(ACTS[a[1]](vals[a[0]]))
            elif k in ("norm", "rms"):
                vals.append(self.layers[str(i)](vals[a[0]]))
            elif k == "scale":
                vals.append(vals[a[0]] * getattr(self, f"scale{i}"))
            elif k == "add":
                vals.append(vals[a[0]] + vals[a[1]])
            elif k == "mul":
                vals.append(vals[a[0]] * vals[a[1]])
            elif k == "cat":
                vals.append(torch.cat([vals[a[0]], vals[a[1]]], dim=-1))
            elif k == "split":
                vals.extend(vals[a[0]].split([a[1], self.widths[a[0]] - a[1]], dim=-1))
            elif k == "chunk":
                vals.extend(vals[a[0]].chunk(2, dim=-1))
            elif k == "attn":
                src, heads, head_dim, v_dim = a
                q_proj, k_proj, v_proj, o_proj = self.layers[str(i)]
                h = vals[src]
                b, s, _ = h.shape
                q = q_proj(h).view(b, s, heads, head_dim).transpose(1, 2)
                kk = k_proj(h).view(b, s, heads, head_dim).transpose(1, 2)
                v = v_proj(h).view(b, s, heads, v_dim).transpose(1, 2)
                o = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(b, s, heads * v_dim)
                vals.append(o_proj(o))
            elif k == "eattn":
                # The same attention written with einsum (scores scaled by the original head_dim).
                src, heads, head_dim, v_dim = a
                q_proj, k_proj, v_proj, o_proj = self.layers[str(i)]
                h = vals[src]
                b, s, _ = h.shape
                q = q_proj(h).view(b, s, heads, head_dim)
                kk = k_proj(h).view(b, s, heads, head_dim)
                v = v_proj(h).view(b, s, heads, v_dim)
                att = (torch.einsum("bnhd,bmhd->bhnm", q, kk) / head_dim ** 0.5).softmax(-1)
                vals.append(o_proj(torch.einsum("bhnm,bmhd->bnhd", att, v).reshape(b, s, heads * v_dim)))
            elif k == "gqa":
                # LLaMA's repeat_kv: expand the KV heads to the query heads, then attend.
                src, kv, rep, head_dim = a
                q_proj, k_proj, v_proj, o_proj = self.layers[str(i)]
                h = vals[src]
                b, s, _ = h.shape
                q = q_proj(h).view(b, s, kv * rep, head_dim).transpose(1, 2)
                kk = k_proj(h).view(b, s, kv, head_dim).transpose(1, 2)
                v = v_proj(h).view(b, s, kv, head_dim).transpose(1, 2)
                kk = kk[:, :, None].expand(b, kv, rep, s, head_dim).reshape(b, kv * rep, s, head_dim)
                v = v[:, :, None].expand(b, kv, rep, s, head_dim).reshape(b, kv * rep, s, head_dim)
                o = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(b, s, kv * rep * head_dim)
                vals.append(o_proj(o))
            elif k == "gate":
                vals.append(vals[a[0]] * torch.sigmoid(self.layers[str(i)](vals[a[0]])))
            elif k == "center":
                vals.append(vals[a[0]] - vals[a[0]].mean(-1, keepdim=True))
            elif k == "cat3":
                vals.append(torch.cat([vals[j] for j in a], dim=-1))
            elif k == "chain":
                h = vals[a[0]]
                for block in self.layers[str(i)]:
                    h = h + block(h)
                vals.append(h)
        return self.head(vals[-1])


@st.composite
def programs(draw, max_ops: int = 7) -> tuple[int, list[Op]]:
    in_width = draw(st.integers(3, 8))
    widths = [in_width]
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, max_ops))):
        choices = ["linear", "linear", "act", "norm", "rms", "scale", "add", "mul", "cat", "split", "chunk", "attn",
                   "eattn", "gqa", "gate", "center", "cat3", "chain"]
        kind = draw(st.sampled_from(choices))
        src = draw(st.integers(0, len(widths) - 1))
        w = widths[src]
        same = [j for j, wj in enumerate(widths) if wj == w and j != src]
        if kind == "linear":
            out = draw(st.integers(2, 12))
            ops.append(Op(kind, (src, out)))
            widths.append(out)
        elif kind == "act":
            ops.append(Op(kind, (src, draw(st.sampled_from(sorted(ACTS))))))
            widths.append(w)
        elif kind in ("norm", "rms", "scale"):
            ops.append(Op(kind, (src,)))
            widths.append(w)
        elif kind in ("add", "mul") and same:
            ops.append(Op(kind, (src, draw(st.sampled_from(same)))))
            widths.append(w)
        elif kind == "cat":
            other = draw(st.integers(0, len(widths) - 1))
            ops.append(Op(kind, (src, other)))
            widths.append(w + widths[other])
        elif kind == "split" and w >= 3:
            k = draw(st.integers(1, w - 1))
            ops.append(Op(kind, (src, k)))
            widths += [k, w - k]
        elif kind == "chunk" and w >= 4 and w % 2 == 0:
            ops.append(Op(kind, (src,)))
            widths += [w // 2, w // 2]
        elif kind in ("attn", "eattn"):
            heads = draw(st.integers(1, 4))
            ops.append(Op(kind, (src, heads, draw(st.integers(2, 4)), draw(st.integers(2, 4)))))
            widths.append(w)
        elif kind == "gqa":
            ops.append(Op(kind, (src, draw(st.integers(1, 3)), draw(st.integers(2, 3)), draw(st.integers(2, 4)))))
            widths.append(w)
        elif kind in ("gate", "center") and w >= 2:
            ops.append(Op(kind, (src,)))
            widths.append(w)
        elif kind == "cat3":
            parts = (src, draw(st.integers(0, len(widths) - 1)), draw(st.integers(0, len(widths) - 1)))
            ops.append(Op(kind, parts))
            widths.append(sum(widths[j] for j in parts))
        elif kind == "chain":
            ops.append(Op(kind, (src, draw(st.integers(2, 10)), draw(st.integers(2, 3)))))
            widths.append(w)
    return in_width, ops


OP_KINDS = ("linear", "act", "norm", "rms", "scale", "add", "mul", "cat", "split", "chunk", "attn", "eattn", "gqa", "gate",
            "center", "cat3", "chain")


def build(in_width: int, program: list[Op], seed: int = 0) -> tuple[ProgramModel, tuple]:
    torch.manual_seed(seed)
    model = ProgramModel(in_width, program, out_width=3).eval()
    x = torch.randn(2, 5, in_width, generator=torch.Generator().manual_seed(seed))
    return model, (x,)
