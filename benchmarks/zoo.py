"""The architecture zoo as a report: prunec and Torch-Pruning side by side, one markdown table.

Protocol (every case of ``tests/zoo/cases.py``, tiny random-weight models, CPU):

* **prunec**: ``check_dead_unit_exactness`` at ratio 0.3 on every kind (kill 30% of each prunable
  group's units, prune with L2 magnitude, compare outputs): groups (prunable/total), frozen groups
  and the ops left without a rule, parameters removed, max |pruned - original|, seconds.
* **Torch-Pruning 1.6** (``pip install torch-pruning``, benchmarks only): its documented recipe,
  ``MetaPruner(model, example_inputs, MagnitudeImportance(p=2), pruning_ratio=0.3,
  ignored_layers=[the last Linear/Conv],
  output_transform=a sum over every output tensor)`` then ``pruner.step()``; status is ``ok`` when the pruned
  model runs and every output keeps its shape, else where it failed (``graph``: building the
  dependency graph, ``prune``: the pruning step, ``run``: the forward pass, ``shape``: an output
  changed shape).  Parameters removed counts distinct parameters before and after.

Each case and each tool run under a time budget (``--budget`` seconds, default 120).

    python benchmarks/zoo.py                 # all cases, both tools
    python benchmarks/zoo.py --cases gpt2,swin --no-tp
"""

from __future__ import annotations

import argparse
import copy
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from models import randomize_  # noqa: E402
from prunec.analysis.groups import KINDS  # noqa: E402
from prunec.testing import check_dead_unit_exactness, flatten_outputs  # noqa: E402
from zoo.cases import CASES  # noqa: E402


class Timeout(Exception):
    pass


def _alarm(seconds: int):
    def handler(signum, frame):
        raise Timeout(f"over {seconds}s")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def short(text: str, n: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def run_prunec(case, budget: int) -> dict:
    start = time.perf_counter()
    try:
        _alarm(budget)
        model, args, kwargs = case.build()
        randomize_(model)
        report = check_dead_unit_exactness(model, args, kwargs, ratio=0.3, kinds=KINDS)
        signal.alarm(0)
    except Exception as exc:  # noqa: BLE001 - a crash is a result to report
        signal.alarm(0)
        return {"status": f"crash: {short(type(exc).__name__ + ': ' + str(exc), 60)}", "seconds": time.perf_counter() - start}
    result, analysis = report.result, report.result.analysis
    frozen = [g for g in analysis.groups if g.frozen]
    unhandled = sorted({r.removeprefix("no rule for ") for _, r in analysis.unhandled_ops})
    exact = report.max_abs_diff <= 1e-5 and result.removed == report.expected_units
    return {
        "status": "exact" if exact else f"DIFF {report.max_abs_diff:.1e}",
        "groups": f"{len(analysis.prunable_groups)}/{len(analysis.groups)}",
        "frozen": len(frozen),
        "unhandled": ", ".join(unhandled) or "-",
        "removed": result.removed_fraction,
        "seconds": time.perf_counter() - start,
    }


def _last_layer(model: torch.nn.Module) -> list[torch.nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    return layers[-1:]


def _all_outputs(out):
    """One scalar that depends on every floating-point output (Hugging Face models return ModelOutput)."""
    return sum(t.sum() for t in flatten_outputs(out) if t.is_floating_point())


def run_torch_pruning(case, budget: int) -> dict:
    import torch_pruning as tp

    model, args, kwargs = case.build()
    randomize_(model)
    with torch.no_grad():
        reference = [tuple(t.shape) for t in flatten_outputs(model(*args, **kwargs))]
    before = n_params(model)
    example = args[0] if len(args) == 1 and not kwargs else args
    stage = "graph"
    start = time.perf_counter()
    try:
        _alarm(budget)
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=0.3, ignored_layers=_last_layer(model),
                                      output_transform=_all_outputs)
        stage = "prune"
        pruner.step()
        stage = "run"
        with torch.no_grad():
            shapes = [tuple(t.shape) for t in flatten_outputs(model(*args, **kwargs))]
        signal.alarm(0)
    except Exception as exc:  # noqa: BLE001
        signal.alarm(0)
        removed = 1 - n_params(model) / before
        return {"status": f"{stage}: {short(type(exc).__name__ + ': ' + str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 60)}",
                "removed": removed, "seconds": time.perf_counter() - start}
    status = "ok" if shapes == reference else f"shape: {short(str(reference[0]) + ' -> ' + str(shapes[0]), 40)}"
    return {"status": status, "removed": 1 - n_params(model) / before, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--budget", type=int, default=120, help="seconds per case and tool")
    parser.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    opts = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    chosen = [c for c in CASES if not opts.cases or c.name in opts.cases.split(",")]
    lines = ["| case | family | prunec | groups (prunable/all) | frozen groups | ops without a rule | removed | s "
             "| Torch-Pruning | TP removed | TP s |", "|---" * 11 + "|"]
    totals = {"exact": 0, "p_ok10": 0, "tp_ok": 0, "tp_ok10": 0}
    for case in chosen:
        p = run_prunec(case, opts.budget)
        t = {"status": "skipped", "removed": float("nan"), "seconds": 0.0}
        if not opts.no_tp:
            try:
                t = run_torch_pruning(case, opts.budget)
            except Exception as exc:  # noqa: BLE001 - even building the case for TP
                t = {"status": f"setup: {short(str(exc), 50)}", "removed": float("nan"), "seconds": 0.0}
        totals["exact"] += p["status"] == "exact"
        totals["p_ok10"] += p["status"] == "exact" and p.get("removed", 0) >= 0.10
        totals["tp_ok"] += t["status"] == "ok"
        totals["tp_ok10"] += t["status"] == "ok" and t["removed"] >= 0.10
        row = (f"| {case.name} | {case.family} | {p['status']} | {p.get('groups', '-')} | {p.get('frozen', '-')} "
               f"| {short(p.get('unhandled', '-'), 70)} | {p.get('removed', float('nan')):.1%} | {p['seconds']:.1f} "
               f"| {t['status']} | {t['removed']:.1%} | {t['seconds']:.1f} |")
        lines.append(row)
        print(row, flush=True)
    n = len(chosen)
    summary = (f"\n{n} cases. prunec: {totals['exact']} exact under the dead-unit oracle, {totals['p_ok10']} exact with "
               f">= 10% of parameters removed. Torch-Pruning 1.6: {totals['tp_ok']} run with every output shape kept, "
               f"{totals['tp_ok10']} of them with >= 10% removed.")
    print(summary)
    if opts.out:
        opts.out.write_text("\n".join(lines) + "\n" + summary + "\n")


if __name__ == "__main__":
    main()
