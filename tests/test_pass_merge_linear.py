"""merge-linear: printed IR as the oracle; outputs equal to float rounding; no growth by default."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunec.ir import assert_ir
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import Step, run_passes
from prunec.trace import trace

load_builtin_passes()


class Chain(nn.Module):
    def __init__(self, widths: tuple[int, ...], bias: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(widths, widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def test_merges_a_chain_of_three_into_one() -> None:
    torch.manual_seed(0)
    model = Chain((6, 5, 4, 3)).eval()
    x = torch.randn(2, 6)
    gm = trace(model, (x,))
    result = run_passes(gm, [Step.of("merge-linear"), Step.of("dce")])
    assert result.modified
    assert_ir(result.graph_module, """
        %layers_2_weight = param layers.2.weight : f32[3, 6]
        %layers_2_bias = param layers.2.bias : f32[3]
        %x = input : f32[2, 6]
        %linear_2 = aten.linear.default(%x, %layers_2_weight, %layers_2_bias) : f32[2, 3]
        return [%linear_2]
    """)
    with torch.no_grad():
        assert torch.allclose(result.graph_module(x), model(x), atol=1e-5, rtol=1e-5)


def test_bias_only_on_the_inner_layer_becomes_a_new_bias() -> None:
    torch.manual_seed(0)
    model = Chain((4, 4, 4), bias=False).eval()
    model.layers[0].bias = nn.Parameter(torch.randn(4))
    x = torch.randn(3, 4)
    gm = trace(model, (x,))
    result = run_passes(gm, [Step.of("merge-linear"), Step.of("dce")])
    assert_ir(result.graph_module, """
        %layers_1_weight = param layers.1.weight : f32[4, 4]
        %layers_1_bias = param layers.1.bias : f32[4]
        %x = input : f32[3, 4]
        %linear_1 = aten.linear.default(%x, %layers_1_weight, %layers_1_bias) : f32[3, 4]
        return [%linear_1]
    """)
    with torch.no_grad():
        assert torch.allclose(result.graph_module(x), model(x), atol=1e-5, rtol=1e-5)


def test_keeps_a_low_rank_bottleneck_unless_growth_is_allowed() -> None:
    model = Chain((16, 2, 16)).eval()
    x = torch.randn(1, 16)
    assert not run_passes(trace(model, (x,)), [Step.of("merge-linear")]).modified
    grown = run_passes(trace(model, (x,)), [Step.of("merge-linear", allow_growth=True)])
    assert grown.modified
    with torch.no_grad():
        assert torch.allclose(grown.graph_module(x), model(x), atol=1e-5, rtol=1e-5)


def test_an_activation_between_blocks_the_merge() -> None:
    class WithRelu(Chain):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers[1](self.layers[0](x).relu())

    gm = trace(WithRelu((4, 4, 4)).eval(), (torch.randn(1, 4),))
    assert not run_passes(gm, [Step.of("merge-linear")]).modified
