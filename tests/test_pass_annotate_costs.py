"""annotate-costs: per-node params/FLOPs in node.meta; sums match the model's totals; IR unchanged."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunec.ir import format_graph
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
