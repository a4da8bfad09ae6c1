"""remove-noops: printed IR as the oracle; the rules are a registry keyed by ATen op."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunec.ir import assert_ir
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import Step, run_passes
from prunec.passes.remove_noops import NOOP_RULES
from prunec.trace import trace

load_builtin_passes()
aten = torch.ops.aten


class Noops(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone().detach() * 1
        y = (y + 0).view(2, 3).permute(0, 1)
        z = y.view(3, 2) * 2  # a real reshape and a real scale stay
        return y.transpose(1, 1) / 1, z.to(torch.float32), x.to(torch.float64)


def test_removes_every_identity_and_keeps_real_work() -> None:
    x = torch.randn(2, 3)
    gm = trace(Noops(), (x,))
    expected = Noops()(x)
    result = run_passes(gm, [Step.of("remove-noops")])
    assert result.modified
    assert_ir(result.graph_module, """
        %x = input : f32[2, 3]
        %view_1 = aten.view.default(%x, [3, 2]) : f32[3, 2]
        %mul_1 = aten.mul.Tensor(%view_1, 2) : f32[3, 2]
        %_assert_tensor_metadata_default = aten._assert_tensor_metadata.default(%mul_1, dtype=torch.float32, device=device(type='cpu'), layout=torch.strided) : none
        %_assert_tensor_metadata_default_1 = aten._assert_tensor_metadata.default(%x, dtype=torch.float32, device=device(type='cpu'), layout=torch.strided) : none
        %to_1 = aten.to.dtype(%x, torch.float64) : f64[2, 3]
        return [%x, %mul_1, %to_1]
    """)
    for got, want in zip(result.graph_module(x), expected):
        assert torch.equal(got, want) and got.dtype == want.dtype


def test_rules_are_keyed_by_aten_overloads() -> None:
    assert aten.clone.default in NOOP_RULES and aten.mul.Tensor in NOOP_RULES
    assert all(isinstance(op, torch._ops.OpOverload) for op in NOOP_RULES)


def test_integer_times_float_one_is_a_cast_and_stays() -> None:
    class IntScale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1.0

    gm = trace(IntScale(), (torch.arange(4),))
    assert not run_passes(gm, [Step.of("remove-noops")]).modified
