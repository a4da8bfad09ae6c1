"""Instruments: PrintIR, DumpIR, Timing, VerifyEachPass, through PassContext and run_passes."""

from __future__ import annotations

import io

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from prunec.errors import ConfigError, TransformError
from prunec.instruments import (DumpIR, InstrumentOptions, PassContext, PassInstrument, PrintIR, Timing,
                                VerifyEachPass, instruments_from_options)
from prunec.ir import format_graph
from prunec.pass_api import PassResult
from prunec.pass_loading import load_builtin_passes
from prunec.pass_manager import PassManager, Step, run_passes
from prunec.trace import trace

load_builtin_passes()
aten = torch.ops.aten


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).clone()


def _setup():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 5)
    return trace(ConvBN().eval(), (x,)), x


PIPELINE = ("fold-batchnorm", "remove-noops", "dce")


def test_dump_ir_writes_one_file_per_step_that_diff_cleanly(tmp_path) -> None:
    gm, _ = _setup()
    with PassContext(instruments=[DumpIR(tmp_path / "ir")]):
        run_passes(gm, [Step.of(p) for p in PIPELINE])
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == ["000_input.txt", "001_fold-batchnorm.txt", "002_remove-noops.txt", "003_dce.txt"]
    assert (tmp_path / "ir" / "003_dce.txt").read_text() == format_graph(gm)
    assert "batch_norm" in (tmp_path / "ir" / "000_input.txt").read_text()
    assert "batch_norm" not in (tmp_path / "ir" / "001_fold-batchnorm.txt").read_text()


def test_dump_ir_refuses_a_non_empty_directory(tmp_path) -> None:
    (tmp_path / "old.txt").write_text("x")
    gm, _ = _setup()
    with pytest.raises(ConfigError, match="not empty"):
        run_passes(gm, [Step.of("dce")], instruments=[DumpIR(tmp_path)])


def test_print_ir_before_and_after_only_the_named_pass() -> None:
    gm, _ = _setup()
    stream = io.StringIO()
    run_passes(gm, [Step.of(p) for p in PIPELINE],
               instruments=[PrintIR(before=True, after=True, passes=["remove-noops"], stream=stream)])
    text = stream.getvalue()
    assert text.count("# ----") == 2
    assert "IR before remove-noops (step 2)" in text and "IR after remove-noops (step 2, modified)" in text
    before, after = text.split("# ---- IR after")
    assert "aten.clone.default" in before and "aten.clone.default" not in after


def test_timing_records_every_step() -> None:
    gm, _ = _setup()
    timing = Timing()
    run_passes(gm, [Step.of(p) for p in PIPELINE], instruments=[timing])
    assert [r.name for r in timing.records] == list(PIPELINE)
    assert all(r.seconds >= 0 for r in timing.records)
    assert "total" in timing.report()


def test_verify_each_pass_accepts_exact_passes() -> None:
    gm, x = _setup()
    verify = VerifyEachPass((x,))
    run_passes(gm, [Step.of(p) for p in PIPELINE], instruments=[verify])
    assert verify.numeric_checks == 3


def _corrupt_bias(gm: fx.GraphModule) -> PassResult:
    gm.conv.bias.data += 0.1
    return PassResult(gm, True)


def test_verify_each_pass_names_a_pass_that_changes_outputs() -> None:
    gm, x = _setup()
    steps = [Step.of("fold-batchnorm"), Step.custom("corrupt", _corrupt_bias)]
    with pytest.raises(TransformError, match=r"pass 'corrupt' \(step 2, after: fold-batchnorm\) changed output 0 "
                                             r"by up to 0\.1"):
        run_passes(gm, steps, instruments=[VerifyEachPass((x,))])


def test_verify_each_pass_catches_dishonest_modified_and_stale_shapes() -> None:
    gm, x = _setup()

    def silent(gm: fx.GraphModule) -> PassResult:
        clone = next(n for n in gm.graph.nodes if n.target == aten.clone.default)
        clone.replace_all_uses_with(clone.args[0])
        gm.graph.erase_node(clone)
        gm.recompile()
        return PassResult(gm, False)

    with pytest.raises(TransformError, match=r"pass 'silent' .*reported modified=False but changed the IR"):
        run_passes(gm, [Step.custom("silent", silent)], instruments=[VerifyEachPass((x,))])

    def stale(gm: fx.GraphModule) -> PassResult:
        conv = next(n for n in gm.graph.nodes if n.target == aten.conv2d.default)
        conv.meta["val"] = conv.meta["val"].new_empty((1, 2, 3, 3))
        return PassResult(gm, True)

    gm, x = _setup()
    with pytest.raises(TransformError, match=r"pass 'stale' .*stale shape metadata on node conv2d: recorded "
                                             r"\[1, 2, 3, 3\], re-propagated \[1, 4, 3, 3\]"):
        run_passes(gm, [Step.custom("stale", stale)], instruments=[VerifyEachPass((x,))])


def test_verify_each_pass_skips_the_numeric_check_of_inexact_passes() -> None:
    gm, x = _setup()
    verify = VerifyEachPass((x,))
    run_passes(gm, [Step.custom("lossy", _corrupt_bias, exact=False)], instruments=[verify])
    assert verify.numeric_checks == 0


def test_after_hooks_run_in_reverse_order() -> None:
    calls = []

    class Named(PassInstrument):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_pass(self, gm, info) -> None:
            calls.append(f"{self.name}.before")

        def after_pass(self, gm, info, modified) -> None:
            calls.append(f"{self.name}.after")

    gm, _ = _setup()
    with PassContext([Named("outer")]):
        run_passes(gm, [Step.of("dce")], instruments=[Named("inner")])
    assert calls == ["outer.before", "inner.before", "inner.after", "outer.after"]


def test_a_failing_step_is_dumped_before_verification_raises(tmp_path) -> None:
    gm, x = _setup()
    found = instruments_from_options(InstrumentOptions(dump_ir=tmp_path / "ir", verify_each=True), (x,))
    with pytest.raises(TransformError, match="pass 'corrupt'"):
        run_passes(gm, [Step.custom("corrupt", _corrupt_bias)], instruments=found)
    assert (tmp_path / "ir" / "001_corrupt.txt").exists()


def test_context_instruments_nest_and_reset(tmp_path) -> None:
    outer, inner = Timing(), Timing()
    gm, _ = _setup()
    with PassContext([outer]):
        with PassContext([inner]):
            PassManager([Step.of("dce")]).run(gm)
        PassManager([Step.of("dce")]).run(gm)
    PassManager([Step.of("dce")]).run(gm)
    assert len(outer.records) == 2 and len(inner.records) == 1


def test_instruments_from_options(tmp_path) -> None:
    found = instruments_from_options(InstrumentOptions(dump_ir=tmp_path, print_ir_after_all=True, verify_each=True,
                                                       time_passes=True), (torch.zeros(1),))
    assert [type(i).__name__ for i in found] == ["VerifyEachPass", "PrintIR", "DumpIR", "Timing"]
    assert instruments_from_options(InstrumentOptions()) == []
