"""The architecture zoo: trace, analyse, prune 30% of every prunable kind, dead-unit oracle, ONNX.

Every case must prune exactly (outputs of the pruned model equal the original's
once the removed units are made dead) and remove >= 10% of the parameters, or
record in ``zoo/cases.py`` which ops it leaves unhandled and why.  The recorded
list is an upper bound: an op without a rule that is not recorded fails the case
(a regression); a recorded one that no longer appears does not (the library may
have stopped emitting it).  The pruned
model is also exported with ``torch.onnx.export(dynamo=True)`` and run in ONNX
Runtime for a representative subset (``PRUNEC_ZOO_ONNX=all`` for every case,
``=none`` to skip).  Each case has a time budget (``PRUNEC_ZOO_BUDGET_S``, 120 s).
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.allocation import uniform_count
from prunec.prune import select_groups
from prunec.testing import check_dead_unit_exactness
from zoo.cases import CASES, ZooCase
from zoo.onnx_check import onnx_max_abs_diff

ONNX_MODE = os.environ.get("PRUNEC_ZOO_ONNX", "subset")
BUDGET_S = int(os.environ.get("PRUNEC_ZOO_BUDGET_S", "120"))
TOLERANCE = 1e-5


@pytest.fixture
def time_budget():
    """Fail a case that runs past its budget instead of hanging the suite."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"zoo case exceeded its {BUDGET_S}s budget")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(BUDGET_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _params(case: ZooCase):
    marks = [pytest.mark.xfail(reason=case.known_bug, strict=True)] if case.known_bug else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("case", [_params(c) for c in CASES])
def test_zoo_case(case: ZooCase, time_budget) -> None:
    model, args, kwargs = case.build()
    randomize_(model)
    report = check_dead_unit_exactness(model, args, kwargs, ratio=0.3, kinds=KINDS)
    result, analysis = report.result, report.result.analysis

    # A regression is an op that gains no rule (a reason not recorded); a recorded reason that no longer
    # appears is progress, or a library that stopped emitting the op (transformers' rotary under no_grad).
    unhandled = {reason for _, reason in analysis.unhandled_ops}
    new = sorted(unhandled - set(case.unhandled))
    assert not new, f"ops left unhandled that had a rule or were never seen: {new} (recorded: {case.unhandled})"
    assert result.removed == report.expected_units, "magnitude importance must pick exactly the dead units"
    assert report.max_abs_diff <= TOLERANCE, f"pruned outputs differ by {report.max_abs_diff}"
    # Everything prunable was pruned: every group big enough for 30% lost units.
    unpruned = [g.label for g in select_groups(analysis, KINDS) if uniform_count(g, 0.3) > 0 and g.id not in result.removed]
    assert not unpruned, f"prunable groups left whole: {unpruned}"
    assert result.removed_fraction >= case.min_removed, (
        f"only {result.removed_fraction:.1%} of parameters removed (needs {case.min_removed:.0%})")
    if case.min_removed < 0.10:
        assert case.limitation and case.unhandled, "a case below 10% must say what it freezes and why"

    if ONNX_MODE == "all" or (ONNX_MODE == "subset" and case.onnx):
        diff = onnx_max_abs_diff(result.module, args, kwargs)
        assert diff <= 1e-4, f"ONNX Runtime output differs from PyTorch by {diff}"


def test_zoo_is_large_and_covers_the_families() -> None:
    assert len(CASES) >= 50
    families = {c.family for c in CASES}
    assert families == {"decoder", "encoder", "vision", "hand"}
    assert sum(c.onnx for c in CASES) >= 15, "the default ONNX subset spans the families"
