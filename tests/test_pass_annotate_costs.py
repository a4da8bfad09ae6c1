"""annotate-costs: per-node params/FLOPs in node.meta; sums match the model's totals; IR unchanged."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunec.ir import assert_ir, format_graph
from prunec.metrics import count_flops
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import Step, run_passes
from prunec.passes.annotate_costs import FLOPS_KEY, PARAMS_KEY
from prunec.trace import trace

load_builtin_passes()


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def test_printed_annotations_after_folding() -> None:
    gm = trace(ConvNet().eval(), (torch.randn(2, 3, 8, 8),))
    result = run_passes(gm, [Step.of("fold-batchnorm"), Step.of("dce"), Step.of("annotate-costs")])
    assert_ir(result.graph_module, """
        %conv_weight = param conv.weight : f32[8, 3, 3, 3]
        %conv_bias = param conv.bias : f32[8]
        %fc_weight = param fc.weight : f32[5, 8]
        %fc_bias = param fc.bias : f32[5]
        %x = input : f32[2, 3, 8, 8]
        %conv2d = aten.conv2d.default(%x, %conv_weight, %conv_bias, [1, 1], [1, 1]) : f32[2, 8, 8, 8]  # params=224 flops=55296
        %relu = aten.relu.default(%conv2d) : f32[2, 8, 8, 8]  # params=0 flops=0
        %mean = aten.mean.dim(%relu, [2, 3]) : f32[2, 8]  # params=0 flops=0
        %linear = aten.linear.default(%mean, %fc_weight, %fc_bias) : f32[2, 5]  # params=45 flops=160
        return [%linear]
    """, annotations=(PARAMS_KEY, FLOPS_KEY))


def test_annotations_sum_to_the_model_totals() -> None:
    model = ConvNet().eval()
    x = torch.randn(2, 3, 8, 8)
    gm = trace(model, (x,))
    before = format_graph(gm)
    result = run_passes(gm, [Step.of("annotate-costs")])
    assert not result.modified and format_graph(gm) == before  # metadata only
    nodes = {n.name: n for n in gm.graph.nodes}
    assert nodes["conv2d"].meta[PARAMS_KEY] == 8 * 3 * 3 * 3 + 8
    assert nodes["conv2d"].meta[FLOPS_KEY] == 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)
    assert nodes["linear"].meta[FLOPS_KEY] == 2 * 2 * 8 * 5
    assert nodes["relu"].meta[FLOPS_KEY] == 0
    assert sum(n.meta[PARAMS_KEY] for n in gm.graph.nodes) == sum(p.numel() for p in model.parameters())
    assert sum(n.meta[FLOPS_KEY] for n in gm.graph.nodes) == count_flops(model, (x,))


def test_a_tied_weight_counts_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    gm = trace(Tied().eval(), (torch.randn(1, 4),))
    run_passes(gm, [Step.of("annotate-costs")])
    assert sum(n.meta[PARAMS_KEY] for n in gm.graph.nodes) == 16
