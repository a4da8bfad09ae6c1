"""PassManager: contract checks before running, errors naming the pass and those before it, fixed points."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from prunec.errors import ConfigError, TransformError
from prunec.pass_api import PassResult
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import PassManager, Step
from prunec.pass_spec import parse_pipeline
from prunec.trace import trace

load_builtin_passes()
aten = torch.ops.aten


def _gm() -> fx.GraphModule:
    return trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()).eval(), (torch.randn(1, 3),))


def _noop(gm: fx.GraphModule) -> PassResult:
    return PassResult(gm, modified=False)


def test_requires_not_ensured_is_refused_before_anything_runs() -> None:
    ran = []

    def first(gm: fx.GraphModule) -> PassResult:
        ran.append("first")
        return PassResult(gm, False)

    steps = [Step.custom("first", first), Step.custom("second", _noop),
             Step.custom("needs-stats", _noop, requires=("calibration statistics",))]
    with pytest.raises(ConfigError, match=r"pass 'needs-stats' \(step 3 of 3\) requires 'calibration statistics'"
                                          r".*passes before it \(first, second"):
        PassManager(steps)
    assert ran == []


def test_requires_met_by_an_earlier_ensures() -> None:
    steps = [Step.custom("stats", _noop, ensures=("calibration statistics",)),
             Step.custom("needs-stats", _noop, requires=("calibration statistics",))]
    assert not PassManager(steps).run(_gm()).modified


def test_invalidated_invariant_must_be_re_established() -> None:
    # fold-batchnorm may leave dead nodes; a step needing "no dead nodes" after it needs dce between.
    needs = Step.custom("needs-clean", _noop, requires=("no dead nodes",))
    with pytest.raises(ConfigError, match=r"'needs-clean' \(step 3 of 3\).*\(dce, fold-batchnorm; .*put a pass "
                                          r"that ensures it before it \(.*dce"):
        PassManager([Step.of("dce"), Step.of("fold-batchnorm"), needs])
    PassManager([Step.of("fold-batchnorm"), Step.of("dce"), needs])


def test_a_failing_pass_is_named_with_the_passes_before_it() -> None:
    def broken(gm: fx.GraphModule) -> PassResult:
        raise KeyError("weight")

    pm = PassManager([Step.of("dce"), Step.of("remove-noops"), Step.custom("broken", broken)])
    with pytest.raises(TransformError, match=r"pass 'broken' \(step 3, after: dce, remove-noops\) failed: KeyError"):
        pm.run(_gm())


def test_a_pass_must_return_a_pass_result() -> None:
    pm = PassManager([Step.custom("sloppy", lambda gm: gm)])
    with pytest.raises(TransformError, match="returned GraphModule; a pass must return PassResult"):
        pm.run(_gm())


def test_step_fixed_point_repeats_until_unchanged() -> None:
    calls = []

    def peel_one(gm: fx.GraphModule) -> PassResult:
        # Removes one relu per call: needs as many runs as there are relus, plus one to see no change.
        calls.append(1)
        relu = next((n for n in gm.graph.nodes if n.target == aten.relu.default), None)
        if relu is None:
            return PassResult(gm, False)
        relu.replace_all_uses_with(relu.args[0])
        gm.graph.erase_node(relu)
        gm.recompile()
        return PassResult(gm, True)

    gm = trace(nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU()), (torch.randn(2),))
    result = PassManager([Step.custom("peel", peel_one, fixed_point=True)]).run(gm)
    assert len(calls) == 4 and result.modified
    assert [r.modified for r in result.history] == [True, True, True, False]


def test_a_pass_that_never_settles_is_reported() -> None:
    always = Step.custom("restless", lambda gm: PassResult(gm, True), fixed_point=True)
    with pytest.raises(TransformError, match=r"pass 'restless' did not reach a fixed point in 3 runs"):
        PassManager([always], max_iterations=3).run(_gm())


def test_pipeline_fixed_point_reruns_the_whole_list() -> None:
    seen = []

    def once(gm: fx.GraphModule) -> PassResult:
        seen.append("once")
        return PassResult(gm, len(seen) == 1)

    result = PassManager([Step.custom("once", once), Step.of("dce")], fixed_point=True).run(_gm())
    assert [r.iteration for r in result.history] == [1, 1, 2, 2]


def test_parse_pipeline_with_options_and_repeat_marker() -> None:
    steps = parse_pipeline("fold-batchnorm, drop-blocks(blocks=[1, 3], container=model.layers), remove-noops*,dce")
    assert [s.name for s in steps] == ["fold-batchnorm", "drop-blocks", "remove-noops", "dce"]
    assert steps[1].run.blocks == (1, 3) and steps[1].run.container == "model.layers"
    assert steps[2].fixed_point and not steps[3].fixed_point
    assert steps[1].label == "drop-blocks(blocks=[1, 3], container='model.layers')"


@pytest.mark.parametrize("spec, message", [
    ("dce,,fold-batchnorm", "empty step"),
    ("no-such-pass", "unknown pass 'no-such-pass'; known passes: .*dce"),
    ("drop-blocks(blocks=[1]", "unbalanced brackets"),
    ("dce(x=1)", "pass 'dce' takes no options"),
    ("merge-linear(colour=1)", "pass 'merge-linear': bad options"),
])
def test_bad_pipeline_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_pipeline(spec)


def test_preserve_input_leaves_the_callers_graph_alone() -> None:
    from prunec.ir import format_graph

    gm = trace(nn.Sequential(nn.Linear(3, 3), nn.Identity(), nn.ReLU()).eval(), (torch.randn(1, 3),))
    x = next(iter(gm.graph.find_nodes(op="placeholder")))
    with gm.graph.inserting_after(x):
        gm.graph.call_function(aten.neg.default, (x,)).meta["val"] = x.meta["val"]
    gm.recompile()
    before = format_graph(gm)
    result = PassManager([Step.of("dce")], preserve_input=True).run(gm)
    assert result.modified and result.graph_module is not gm
    assert format_graph(gm) == before and "aten.neg" not in format_graph(result.graph_module)
