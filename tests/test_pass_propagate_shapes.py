"""propagate-shapes: repairs stale shape metadata and says so; a consistent graph is not modified."""

from __future__ import annotations

import torch
import torch.nn as nn

from prunec.ir import assert_ir
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import Step, run_passes
from prunec.trace import trace

load_builtin_passes()


def test_fixes_stale_metadata() -> None:
    gm = trace(nn.Linear(3, 2).eval(), (torch.randn(4, 3),))
    linear = next(n for n in gm.graph.nodes if n.op == "call_function")
    linear.meta["val"] = linear.meta["val"].new_empty((9, 9))  # a pass forgot to update it
    result = run_passes(gm, [Step.of("propagate-shapes")])
    assert result.modified
    assert_ir(result.graph_module, """
        %weight = param weight : f32[2, 3]
        %bias = param bias : f32[2]
        %input_1 = input : f32[4, 3]
        %linear = aten.linear.default(%input_1, %weight, %bias) : f32[4, 2]
        return [%linear]
    """)
    assert not run_passes(gm, [Step.of("propagate-shapes")]).modified
