"""Graph diffs from printed IR: node changes, per-layer params/FLOPs, width highlighting."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn as nn
from rich.console import Console

from prunec.diff_render import _highlighted, render_summary, render_unified
from prunec.errors import ConfigError
from prunec.graph_diff import diff_ir, parse_ir, token_spans
from prunec.ir import format_graph
from prunec.metrics import count_flops
from prunec.trace import trace

BEFORE = textwrap.dedent("""
    %up_weight = param up.weight : f32[16, 8]
    %up_bias = param up.bias : f32[16]
    %down_weight = param down.weight : f32[4, 16]
    %x = input : f32[2, 8]
    %linear = aten.linear.default(%x, %up_weight, %up_bias) : f32[2, 16]
    %relu = aten.relu.default(%linear) : f32[2, 16]
    %clone = aten.clone.default(%relu) : f32[2, 16]
    %linear_1 = aten.linear.default(%clone, %down_weight) : f32[2, 4]
    return [%linear_1]
""").lstrip()

AFTER = textwrap.dedent("""
    %up_weight = param up.weight : f32[12, 8]
    %up_bias = param up.bias : f32[12]
    %down_weight = param down.weight : f32[4, 12]
    %x = input : f32[2, 8]
    %linear = aten.linear.default(%x, %up_weight, %up_bias) : f32[2, 12]
    %relu = aten.relu.default(%linear) : f32[2, 12]
    %linear_1 = aten.linear.default(%relu, %down_weight) : f32[2, 4]
    %gelu = aten.gelu.default(%linear_1) : f32[2, 4]
    return [%gelu]
""").lstrip()


def test_node_changes_are_matched_by_name() -> None:
    diff = diff_ir(BEFORE, AFTER)
    assert diff.added == ("gelu",) and diff.removed == ("clone",)
    assert {name for name, _, _ in diff.changed} == {"up_weight", "up_bias", "down_weight", "linear", "relu",
                                                    "linear_1", "return"}


def test_params_and_flops_per_layer_from_text_alone() -> None:
    diff = diff_ir(BEFORE, AFTER)
    layers = {c.name: c for c in diff.layers}
    up = layers["up"]
    assert up.before.shape == (16, 8) and up.after.shape == (12, 8)
    assert up.before.width == 16 and up.after.width == 12
    assert (up.before.params, up.after.params) == (16 * 8 + 16, 12 * 8 + 12)
    assert (up.before.flops, up.after.flops) == (2 * 2 * 8 * 16, 2 * 2 * 8 * 12)
    assert layers["down"].after.flops == 2 * 2 * 12 * 4
    assert diff.totals["flops_before"] == 2 * 2 * (8 * 16 + 16 * 4)
    assert diff.unreplayed == (0, 0)


def test_flops_from_printed_ir_match_the_flop_counter_on_the_model() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=4, bias=False),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    text = format_graph(trace(model, (x,)))
    diff = diff_ir(text, text)
    assert diff.totals["flops_before"] == count_flops(model, (x,))
    assert diff.changed == () and not any(c.changed for c in diff.layers)


def test_width_tokens_are_the_differing_spans() -> None:
    a, b = token_spans("%up_weight = param up.weight : f32[16, 8]", "%up_weight = param up.weight : f32[12, 8]")
    assert [p for p, d in a if d] == ["16"] and [p for p, d in b if d] == ["12"]
    text = _highlighted("+%up_bias = param up.bias : f32[12]", "-%up_bias = param up.bias : f32[16]", "green")
    marked = [text.plain[s.start:s.end] for s in text.spans if "reverse" in str(s.style)]
    assert marked == ["12"]


def test_terminal_rendering_shows_diff_and_summary() -> None:
    console = Console(record=True, width=200, color_system=None)
    diff = diff_ir(BEFORE, AFTER, "before.txt", "after.txt")
    render_unified(diff, console)
    render_summary(diff, console)
    text = console.export_text()
    assert "-%clone = aten.clone.default(%relu) : f32[2, 16]" in text
    assert "+%gelu = aten.gelu.default(%linear_1) : f32[2, 4]" in text
    assert "nodes added 1, removed 1, changed 7" in text
    assert "[16, 8]" in text and "[12, 8]" in text and "-25.0%" in text


def test_malformed_ir_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2 is not prunec IR"):
        parse_ir("%x = input : f32[1]\nthis is not IR\n")


def test_printed_arguments_are_never_executed() -> None:
    # A crafted dump cannot run code: arguments are read as literals only.
    evil = "%x = input : f32[2]\n%y = aten.relu.default(__import__('os').system('false')) : f32[2]\nreturn [%y]\n"
    diff = diff_ir(evil, evil)
    assert diff.unreplayed == (1, 1)
