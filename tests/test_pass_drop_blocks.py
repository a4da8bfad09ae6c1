"""drop-blocks (depth pruning): printed IR as the oracle; exact when a block's branches output zero."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunec.errors import ConfigError, TransformError
from prunec.ir import assert_ir
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import Step, run_passes
from prunec.trace import trace

load_builtin_passes()


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x).relu()


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).relu()


class Stack(nn.Module):
    def __init__(self, block: type[nn.Module] = Block) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([block() for _ in range(3)])
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def test_drops_a_zero_branch_block_exactly() -> None:
    torch.manual_seed(0)
    model = Stack().eval()
    with torch.no_grad():
        model.blocks[1].fc.weight.zero_()
        model.blocks[1].fc.bias.zero_()
    x = torch.randn(2, 4)
    gm = trace(model, (x,))
    result = run_passes(gm, [Step.of("drop-blocks", blocks=[1])])
    assert result.modified
    assert_ir(result.graph_module, """
        %blocks_0_fc_weight = param blocks.0.fc.weight : f32[4, 4]
        %blocks_0_fc_bias = param blocks.0.fc.bias : f32[4]
        %blocks_2_fc_weight = param blocks.2.fc.weight : f32[4, 4]
        %blocks_2_fc_bias = param blocks.2.fc.bias : f32[4]
        %head_weight = param head.weight : f32[2, 4]
        %head_bias = param head.bias : f32[2]
        %x = input : f32[2, 4]
        %linear = aten.linear.default(%x, %blocks_0_fc_weight, %blocks_0_fc_bias) : f32[2, 4]
        %relu = aten.relu.default(%linear) : f32[2, 4]
        %add = aten.add.Tensor(%x, %relu) : f32[2, 4]
        %linear_2 = aten.linear.default(%add, %blocks_2_fc_weight, %blocks_2_fc_bias) : f32[2, 4]
        %relu_2 = aten.relu.default(%linear_2) : f32[2, 4]
        %add_2 = aten.add.Tensor(%add, %relu_2) : f32[2, 4]
        %linear_3 = aten.linear.default(%add_2, %head_weight, %head_bias) : f32[2, 2]
        return [%linear_3]
    """)
    with torch.no_grad():
        assert torch.allclose(result.graph_module(x), model(x), atol=1e-6, rtol=0)


def test_drops_llama_layers_exactly_when_their_branches_are_zero() -> None:
    pytest.importorskip("transformers")
    from prunec.models import demo_llama

    loaded = demo_llama(8)
    layer = loaded.model.model.layers[2]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        reference = loaded.model(*loaded.args).logits
    gm = trace(loaded.model, loaded.args)
    result = run_passes(gm, [Step.of("drop-blocks", blocks=[2])])
    names = {name for name, _ in result.graph_module.named_parameters()}
    assert not any(n.startswith("model.layers.2.") for n in names)
    assert any(n.startswith("model.layers.3.") for n in names)
    with torch.no_grad():
        assert torch.allclose(result.graph_module(*loaded.args).logits, reference, atol=1e-5, rtol=0)


def test_non_residual_block_is_refused_with_its_name() -> None:
    gm = trace(Stack(Plain).eval(), (torch.randn(2, 4),))
    with pytest.raises(TransformError, match=r"drop-blocks.*blocks\.0 is not residual"):
        run_passes(gm, [Step.of("drop-blocks", blocks=[0])])


def test_unknown_block_index_names_the_range() -> None:
    gm = trace(Stack().eval(), (torch.randn(2, 4),))
    with pytest.raises(ConfigError, match=r"no block 7 in blocks \(it has blocks 0\.\.2\)"):
        run_passes(gm, [Step.of("drop-blocks", blocks=[7])])
