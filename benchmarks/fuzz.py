"""Long run of the random-model fuzzer: hypothesis programs checked by the dead-unit oracle.

Protocol: ``--examples`` random programs from ``tests/random_models.py`` (every op family the
analysis supports: linear, activations, residual adds and chains, gating, uneven concat/split,
chunk, norms, attention and grouped-query attention with reshapes into heads, broadcasting
scales and gates, mean-centering); each is pruned at a random ratio on every kind after killing
the chosen units, and must match the original to 1e-5.  Prints how many programs ran, how often
each op family occurred, the units removed, failures (with the shrunk falsifying program), time.

    python benchmarks/fuzz.py --examples 2000
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from models import randomize_  # noqa: E402
from prunec.analysis.groups import KINDS  # noqa: E402
from prunec.testing import check_dead_unit_exactness  # noqa: E402
from random_models import OP_KINDS, build, programs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--max-ops", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    ops = collections.Counter()
    stats = {"runs": 0, "units": 0, "worst": 0.0}

    @settings(max_examples=opts.examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(prog=programs(max_ops=opts.max_ops), ratio=st.sampled_from([0.2, 0.34, 0.5]), seed=st.integers(0, 3))
    def check(prog, ratio, seed) -> None:
        in_width, program = prog
        model, args = build(in_width, program, seed)
        randomize_(model, seed)
        report = check_dead_unit_exactness(model, args, ratio=ratio, kinds=KINDS, seed=seed)
        stats["runs"] += 1
        ops.update(op.kind for op in program)
        stats["units"] += sum(len(u) for u in report.result.removed.values())
        stats["worst"] = max(stats["worst"], report.max_abs_diff)
        assert report.result.removed == report.expected_units, f"program {program}: other units removed"
        assert report.max_abs_diff <= 1e-5, f"program {program}: outputs differ by {report.max_abs_diff}"

    start = time.perf_counter()
    failure = ""
    try:
        check()
    except AssertionError as exc:
        failure = str(exc).splitlines()[0]
    seconds = time.perf_counter() - start
    print(f"random programs checked: {stats['runs']} (including hypothesis shrinking), {seconds:.0f} s")
    print(f"units removed in total: {stats['units']}; worst |pruned - original|: {stats['worst']:.2e}")
    print("op families: " + ", ".join(f"{k} {ops[k]}" for k in OP_KINDS))
    print(f"result: {'FAIL: ' + failure if failure else 'no failure'}")
    sys.exit(1 if failure else 0)


if __name__ == "__main__":
    main()
