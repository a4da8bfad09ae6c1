"""The structured-removal pass, with the printed IR as the oracle."""

from __future__ import annotations

import textwrap

import torch
import torch.fx as fx
import torch.nn as nn

import prunec
from prunec.ir import diff_graphs, format_graph
from prunec.pass_api import registered_passes
from prunec.passes.structured_removal import RemovalPlan, StructuredRemoval


def assert_ir(gm: fx.GraphModule, expected: str) -> None:
    got = format_graph(gm)
    expected = textwrap.dedent(expected).lstrip()
    assert got == expected, "IR differs from the expected text:\n" + diff_graphs(expected, got, "expected", "got")


class Heads(nn.Module):
    """Two heads of width 3 built by a view; a residual width of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 6, bias=False)
        self.out = nn.Linear(6, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h = self.qkv(x).view(b, s, 2, 3).relu().reshape(b, s, 6)
        return x + self.out(h)


def _heads_model():
    torch.manual_seed(0)
    return Heads().eval(), (torch.randn(1, 5, 4),)


def test_removes_a_head_and_rewrites_the_view_sizes() -> None:
    model, args = _heads_model()
    analysis = prunec.analyze(model, args, keep_interface=False, dynamic=False)
    # The view splits qkv's rows into (2 heads) x (3): both axes are groups of their own.
    by_size = {g.size: g for g in analysis.prunable_groups if g.members[0].name == "qkv.weight"}
    heads = by_size[2]
    gm = analysis.graph_module
    result = StructuredRemoval(analysis, RemovalPlan({heads.id: (1,)}))(gm)
    assert result.modified
    assert_ir(result.graph_module, """
        %qkv_weight = param qkv.weight : f32[3, 4]
        %out_weight = param out.weight : f32[4, 3]
        %x = input : f32[1, 5, 4]
        %linear = aten.linear.default(%x, %qkv_weight) : f32[1, 5, 3]
        %view = aten.view.default(%linear, [1, 5, 1, 3]) : f32[1, 5, 1, 3]
        %relu = aten.relu.default(%view) : f32[1, 5, 1, 3]
        %reshape = aten.reshape.default(%relu, [1, 5, 3]) : f32[1, 5, 3]
        %linear_1 = aten.linear.default(%reshape, %out_weight) : f32[1, 5, 4]
        %add = aten.add.Tensor(%x, %linear_1) : f32[1, 5, 4]
        return [%add]
    """)



def test_dynamic_trace_rewrites_only_the_pruned_widths() -> None:
    """Batch and length stay symbolic (graph values) in the rewritten view sizes; the module runs on other shapes."""
    model, args = _heads_model()
    analysis = prunec.analyze(model, args, keep_interface=False)
    heads = next(g for g in analysis.prunable_groups if g.members[0].name == "qkv.weight" and g.size == 2)
    gm = analysis.graph_module
    StructuredRemoval(analysis, RemovalPlan({heads.id: (1,)}))(gm)
    assert_ir(gm, """
        %qkv_weight = param qkv.weight : f32[3, 4]
        %out_weight = param out.weight : f32[4, 3]
        %x = input : f32[s77, s27, 4]
        %sym_size_int_2 = aten.sym_size.int(%x, 0) : SymInt
        %sym_size_int_3 = aten.sym_size.int(%x, 1) : SymInt
        %linear = aten.linear.default(%x, %qkv_weight) : f32[s77, s27, 3]
        %view = aten.view.default(%linear, [%sym_size_int_2, %sym_size_int_3, 1, 3]) : f32[s77, s27, 1, 3]
        %relu = aten.relu.default(%view) : f32[s77, s27, 1, 3]
        %reshape = aten.reshape.default(%relu, [%sym_size_int_2, %sym_size_int_3, 3]) : f32[s77, s27, 3]
        %linear_1 = aten.linear.default(%reshape, %out_weight) : f32[s77, s27, 4]
        %add = aten.add.Tensor(%x, %linear_1) : f32[s77, s27, 4]
        return [%add]
    """)
    assert gm(torch.randn(3, 7, 4)).shape == (3, 7, 4)

def test_kept_rows_are_the_surviving_head() -> None:
    model, args = _heads_model()
    analysis = prunec.analyze(model, args, keep_interface=False, dynamic=False)
    heads = next(g for g in analysis.prunable_groups if g.members[0].name == "qkv.weight" and g.size == 2)
    StructuredRemoval(analysis, RemovalPlan({heads.id: (0,)}))(analysis.graph_module)
    assert torch.equal(analysis.graph_module.qkv.weight, model.qkv.weight[3:])
    assert torch.equal(analysis.graph_module.out.weight, model.out.weight[:, 3:])


def test_empty_plan_is_not_a_modification() -> None:
    model, args = _heads_model()
    analysis = prunec.analyze(model, args, dynamic=False)
    before = format_graph(analysis.graph_module)
    result = StructuredRemoval(analysis, RemovalPlan({}))(analysis.graph_module)
    assert not result.modified
    assert format_graph(result.graph_module) == before


def test_mean_over_a_pruned_width_keeps_the_original_denominator() -> None:
    class Mean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(x).mean(-1, keepdim=True)

    torch.manual_seed(0)
    analysis = prunec.analyze(Mean().eval(), (torch.randn(2, 3),), dynamic=False)
    group = next(g for g in analysis.prunable_groups if g.size == 4)
    StructuredRemoval(analysis, RemovalPlan({group.id: (0, 2)}))(analysis.graph_module)
    assert_ir(analysis.graph_module, """
        %fc_weight = param fc.weight : f32[2, 3]
        %fc_bias = param fc.bias : f32[2]
        %x = input : f32[2, 3]
        %linear = aten.linear.default(%x, %fc_weight, %fc_bias) : f32[2, 2]
        %sum_dim_int_list = aten.sum.dim_IntList(%linear, [-1], True) : f32[2, 1]
        %div_tensor = aten.div.Tensor(%sum_dim_int_list, 4) : f32[2, 1]
        return [%div_tensor]
    """)


def test_frozen_groups_are_refused() -> None:
    model, args = _heads_model()
    analysis = prunec.analyze(model, args, dynamic=False)  # keep_interface: the residual width reaches the output
    frozen = next(g for g in analysis.groups if g.frozen and g.members[0].name == "qkv.weight")
    try:
        StructuredRemoval(analysis, RemovalPlan({frozen.id: (0,)}))(analysis.graph_module)
    except prunec.TransformError as exc:
        assert "frozen" in str(exc)
    else:
        raise AssertionError("pruning a frozen group must fail")


def test_pass_is_registered_with_its_contract() -> None:
    info = registered_passes()["structured-removal"]
    assert info.ensures == ("shapes propagated",)
    assert info.mutates_input
