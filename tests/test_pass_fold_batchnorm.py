"""fold-batchnorm: printed IR as the oracle, outputs equal to 1e-5."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunec.ir import assert_ir
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import Step, run_passes
from prunec.trace import trace

load_builtin_passes()


class ConvBN(nn.Module):
    """conv (no bias) -> BN2d, and linear -> BN1d: both foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 6)
        self.bn1 = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.fc(self.bn(self.conv(x)).relu().mean((2, 3))))


class SharedConv(nn.Module):
    """The conv output feeds the BN and a second branch: folding would change the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def _randomise_stats(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


def test_folds_conv_and_linear_batchnorm_exactly() -> None:
    torch.manual_seed(0)
    model = ConvBN().eval()
    _randomise_stats(model)
    x = torch.randn(2, 3, 6, 6)
    gm = trace(model, (x,))
    result = run_passes(gm, [Step.of("fold-batchnorm")])
    assert result.modified
    # The BN tensors are left for dce; the conv gained a bias.
    assert_ir(result.graph_module, """
        %conv_weight = param conv.weight : f32[4, 3, 3, 3]
        %conv_bias = param conv.bias : f32[4]
        %bn_weight = param bn.weight : f32[4]
        %bn_bias = param bn.bias : f32[4]
        %fc_weight = param fc.weight : f32[6, 4]
        %fc_bias = param fc.bias : f32[6]
        %bn1_weight = param bn1.weight : f32[6]
        %bn1_bias = param bn1.bias : f32[6]
        %bn_running_mean = param bn.running_mean : f32[4]
        %bn_running_var = param bn.running_var : f32[4]
        %bn_num_batches_tracked = param bn.num_batches_tracked : i64[]
        %bn1_running_mean = param bn1.running_mean : f32[6]
        %bn1_running_var = param bn1.running_var : f32[6]
        %bn1_num_batches_tracked = param bn1.num_batches_tracked : i64[]
        %x = input : f32[2, 3, 6, 6]
        %conv2d = aten.conv2d.default(%x, %conv_weight, %conv_bias) : f32[2, 4, 4, 4]
        %relu = aten.relu.default(%conv2d) : f32[2, 4, 4, 4]
        %mean = aten.mean.dim(%relu, [2, 3]) : f32[2, 4]
        %linear = aten.linear.default(%mean, %fc_weight, %fc_bias) : f32[2, 6]
        return [%linear]
    """)
    with torch.no_grad():
        assert torch.allclose(result.graph_module(x), model(x), atol=1e-5, rtol=0)


def test_a_second_run_reports_no_change() -> None:
    model = ConvBN().eval()
    gm = trace(model, (torch.randn(2, 3, 6, 6),))
    first = run_passes(gm, [Step.of("fold-batchnorm")])
    assert first.modified
    assert not run_passes(first.graph_module, [Step.of("fold-batchnorm")]).modified


def test_leaves_a_conv_whose_output_is_also_used_elsewhere() -> None:
    model = SharedConv().eval()
    _randomise_stats(model)
    x = torch.randn(1, 3, 5, 5)
    gm = trace(model, (x,))
    result = run_passes(gm, [Step.of("fold-batchnorm")])
    assert not result.modified
    assert torch.allclose(result.graph_module(x), model(x))


def test_training_mode_batchnorm_is_not_folded() -> None:
    model = ConvBN().train()
    gm = torch.export.export(model, (torch.randn(2, 3, 6, 6),), strict=False).module()
    assert not run_passes(gm, [Step.of("fold-batchnorm")]).modified
