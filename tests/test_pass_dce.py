"""dce: printed IR as the oracle; honest ``modified``; impure nodes stay."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunec.ir import assert_ir, format_graph
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import Step, run_passes
from prunec.trace import trace

load_builtin_passes()
aten = torch.ops.aten


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("unused", torch.zeros(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).relu()


def _with_dead_node():
    gm = trace(Small().eval(), (torch.randn(1, 3),))
    relu = next(n for n in gm.graph.nodes if n.target == aten.relu.default)
    with gm.graph.inserting_after(relu):
        dead = gm.graph.call_function(aten.neg.default, (relu,))
    dead.meta["val"] = relu.meta["val"]
    gm.recompile()
    return gm


def test_removes_dead_nodes_and_unread_tensors() -> None:
    gm = _with_dead_node()
    assert "aten.neg.default" in format_graph(gm)
    result = run_passes(gm, [Step.of("dce")])
    assert result.modified
    assert_ir(result.graph_module, """
        %fc_weight = param fc.weight : f32[2, 3]
        %fc_bias = param fc.bias : f32[2]
        %x = input : f32[1, 3]
        %linear = aten.linear.default(%x, %fc_weight, %fc_bias) : f32[1, 2]
        %relu = aten.relu.default(%linear) : f32[1, 2]
        return [%relu]
    """)
    assert "unused" not in dict(result.graph_module.named_buffers())


def test_nothing_dead_is_not_a_modification() -> None:
    gm = _with_dead_node()
    run_passes(gm, [Step.of("dce")])
    before = format_graph(gm)
    again = run_passes(gm, [Step.of("dce")])
    assert not again.modified and format_graph(again.graph_module) == before


def test_keeps_impure_nodes() -> None:
    gm = _with_dead_node()
    x = next(iter(gm.graph.find_nodes(op="placeholder")))
    with gm.graph.inserting_after(x):
        check = gm.graph.call_function(aten._assert_tensor_metadata.default, (x,), {"dtype": torch.float32})
    gm.recompile()
    run_passes(gm, [Step.of("dce")])
    assert check in gm.graph.nodes


def test_keeps_tensors_of_called_submodules() -> None:
    # fx.symbolic_trace keeps whole modules as call_module nodes: their weights are read.
    import torch.fx as fx

    gm = fx.symbolic_trace(Small().eval())
    run_passes(gm, [Step.of("dce")], established=())
    assert "fc.weight" in dict(gm.named_parameters()) and "unused" not in dict(gm.named_buffers())
