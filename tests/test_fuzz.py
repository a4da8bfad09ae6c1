"""Property-based tests: the exactness oracle on random DAG models (hypothesis).

The long-running mode lives in benchmarks; here a bounded number of examples
runs on every CI build.
"""

from __future__ import annotations

import os

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.testing import check_dead_unit_exactness
from random_models import build, programs

pytestmark = pytest.mark.slow  # distillation/streaming/fuzzing: tens of seconds on 2 cores


# PRUNEC_FUZZ_EXAMPLES=5000 for a long run (see benchmarks/README.md).
EXAMPLES = int(os.environ.get("PRUNEC_FUZZ_EXAMPLES", "150"))  # long run: benchmarks/fuzz.py


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=programs(), ratio=st.sampled_from([0.2, 0.34, 0.5]), seed=st.integers(0, 3))
def test_random_models_prune_exactly(prog, ratio, seed) -> None:
    in_width, program = prog
    model, args = build(in_width, program, seed)
    randomize_(model, seed)
    report = check_dead_unit_exactness(model, args, ratio=ratio, kinds=KINDS, seed=seed)
    assert report.result.removed == report.expected_units
    assert report.max_abs_diff <= 1e-5, f"program {program}: outputs differ by {report.max_abs_diff}"
