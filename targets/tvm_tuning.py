"""Scheduling the fused TIR tasks of a Relax module: none, dlight rules, or MetaSchedule tuning.

TVM's default CPU pipeline leaves every fused task as plain loop nests (one thread, no
vectorisation). The choices (``CompileOptions.tuning``):

* ``none``: that default, kept for comparison.
* ``dlight``: dlight rules, no measurement, so it works for every target: prunec's rule for conv2d
  and matmul tasks (:mod:`.tvm_cpu_rules`; TVM 0.27 ships none), then TVM's CPU GEMV and Reduction.
* ``metaschedule``: tune each task on this host with MetaSchedule (``tuning_trials`` candidates per
  task, measured), then apply the best records, with the weights of tuned kernels reordered
  (prepacked) into the constants at compile time; dlight covers what was not tuned. Records are cached
  per (target, model) under ``<cache>/tvm-tuning/<target>/<model key>/`` and reused by later compiles.
* ``default``: records from that cache when this (target, model) was tuned before, else dlight.

The model key is a hash of the fused tasks' TIR (not the weights), so a re-pruned model of the same
widths reuses the records, and a different width tunes anew.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunec.errors import ToolchainError
from prunec.targets.preset import TargetPreset

# MetaSchedule segfaults in tvm::ffi::ToJSONGraph with apache-tvm-ffi 0.1.15.post2 and works with this
# one (checked with apache-tvm 0.27.0.post1); re-check when either package moves.
TVM_FFI_PIN = "0.1.14.post1"
# Room for a loaded machine; with build_candidate a candidate builds in seconds.
BUILDER_TIMEOUT_S = 120.0
RUNNER_TIMEOUT_S = 120.0
DEFAULT_TRIALS_PER_TASK = 8


@dataclass(frozen=True)
class Scheduled:
    """A scheduled module and how it got its schedules."""

    module: Any
    tuning: str
    tasks: int = 0          # TIR functions (fused tasks) in the scheduled module
    tuned_tasks: int = 0    # of which have a MetaSchedule record
    scheduled: int = 0      # of which carry any schedule (records or dlight)
    records_dir: str = ""   # where records were read (or, for "default" falling back to dlight, looked for)
    seconds: float = 0.0


def schedule(module: Any, target: Any, preset: TargetPreset, tuning: str, trials: int) -> Scheduled:
    """Apply ``tuning`` (see the module docstring) to the fused ``module`` for ``target``."""
    functions = count_functions(module)
    if tuning == "none":
        return Scheduled(module, "none", tasks=functions)
    if tuning == "dlight":
        scheduled = apply_dlight(module, target)
        return Scheduled(scheduled, "dlight", tasks=functions, scheduled=count_scheduled(scheduled))
    marked = mark_weights_layout_free(module)
    tasks = extract_tasks(marked, target)
    records = records_dir(preset, tasks)
    seconds = 0.0
    if tuning == "metaschedule":
        seconds = tune(tasks, target, preset, records, trials or DEFAULT_TRIALS_PER_TASK)
    elif not has_records(records):  # exactly what --tuning dlight builds; records_dir says where we looked
        scheduled = apply_dlight(module, target)
        return Scheduled(scheduled, "dlight", tasks=functions, scheduled=count_scheduled(scheduled),
                         records_dir=str(records))
    tuned_module, tuned = apply_records(marked, target, records)
    scheduled = apply_dlight(prepack_weights(tuned_module, target), target)
    # Counted on the built module: marking can split a task in two, prepacking drops functions.
    return Scheduled(scheduled, "metaschedule", tasks=count_functions(scheduled), tuned_tasks=tuned,
                     scheduled=count_scheduled(scheduled), records_dir=str(records), seconds=seconds)


def mark_weights_layout_free(module: Any) -> Any:
    """Mark the tasks' weight buffers (Relax constants here) as free to change layout.

    MetaSchedule's ``RewriteLayout`` then lets a tuned schedule read a weight in the blocked order
    its loops walk (what ``relax.pipeline.static_shape_tuning_pipeline(cpu_weight_prepack=True)``
    does, and what MLAS does by prepacking); :func:`prepack_weights` moves that reordering out of
    the kernel. Part of the tasks' TIR, so part of the records' model key.
    """
    from tvm import relax

    return relax.transform.AttachAttrLayoutFreeBuffers()(module)


def prepack_weights(module: Any, target: Any) -> Any:
    """Split each tuned kernel's weight reordering into its own function and fold it into the
    constants at compile time, so the shipped library holds prepacked weights and the same interface
    (the then unused reordering functions are dropped)."""
    import tvm
    from tvm import relax

    with target:
        return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                         relax.transform.FoldConstant(),
                                         relax.transform.DeadCodeElimination(["main"])])(module)


def dlight_rules(with_prunec_rules: bool = True) -> list[Any]:
    """The dlight rules ``dlight`` applies, first match wins: prunec's conv/matmul rule, then TVM's."""
    from tvm.s_tir import dlight

    from prunec.targets.tvm_cpu_rules import make_rule

    tvm_rules = [dlight.cpu.GEMV(), dlight.cpu.Reduction()]
    return [make_rule(), *tvm_rules] if with_prunec_rules else tvm_rules


def apply_dlight(module: Any, target: Any, rules: list[Any] | None = None) -> Any:
    """Schedule every not yet scheduled function with the dlight ``rules`` (default: :func:`dlight_rules`)."""
    from tvm.s_tir import dlight

    with target:
        # clone(): ApplyDefaultSchedule writes the scheduled functions into the module it is given.
        return dlight.ApplyDefaultSchedule(*(rules if rules is not None else dlight_rules()))(module.clone())


def extract_tasks(module: Any, target: Any) -> list[Any]:
    from tvm.s_tir import meta_schedule as ms

    return list(ms.relax_integration.extract_tasks(module, target))


def model_key(tasks: list[Any]) -> str:
    """A hash of the tasks' TIR (structure and shapes, not weights): what tuning records depend on."""
    import tvm_ffi

    hashes = sorted(str(tvm_ffi.structural_hash(task.dispatched[0])) for task in tasks)
    return hashlib.sha256(",".join(hashes).encode()).hexdigest()[:16]


def records_dir(preset: TargetPreset, tasks: list[Any]) -> Path:
    from prunec.targets.tvm_runtime import cache_dir

    return cache_dir() / "tvm-tuning" / preset.name / model_key(tasks)


def has_records(records: Path) -> bool:
    path = records / "database_tuning_record.json"
    return path.is_file() and path.stat().st_size > 0


def check_pin() -> None:
    installed = importlib.metadata.version("apache-tvm-ffi")
    if installed != TVM_FFI_PIN:
        raise ToolchainError(f"MetaSchedule needs apache-tvm-ffi=={TVM_FFI_PIN} (it segfaults with other versions "
                             f"seen, e.g. 0.1.15.post2); {installed} is installed: pip install "
                             f"apache-tvm-ffi=={TVM_FFI_PIN}, or use --tuning dlight")


def tune(tasks: list[Any], target: Any, preset: TargetPreset, records: Path, trials_per_task: int) -> float:
    """Tune ``tasks`` on this host, ``trials_per_task`` measured candidates each; returns seconds spent."""
    if not preset.is_host:
        raise ToolchainError(f"MetaSchedule measures candidates on the device, and {preset.name} is not this host: "
                             f"tune on the device (or copy its records to {records}), or use --tuning dlight")
    if trials_per_task < 1:
        raise ToolchainError("--tuning-trials must be >= 1 with --tuning metaschedule")
    check_pin()
    from tvm.s_tir import meta_schedule as ms

    lacking = [m for m in ("psutil", "cloudpickle") if not _has(m)]  # MetaSchedule's local builder and runner
    if lacking:
        raise ToolchainError(f"MetaSchedule needs {' and '.join(lacking)}: pip install {' '.join(lacking)} "
                             f"(or use --tuning dlight)")

    records.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Below ~64 trials per task the evolutionary search costs more (a population of 2048 mutated
    # schedules per round, about a minute per task here) than it finds: sample the design space instead.
    small = trials_per_task < 64
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, work_dir=str(records), seed=0, strategy="replay-trace" if small else "evolutionary")
    ms.tune_tasks(
        tasks=contexts, task_weights=weights, work_dir=str(records),
        max_trials_global=trials_per_task * len(tasks), max_trials_per_task=trials_per_task,
        num_trials_per_iter=trials_per_task,
        builder=ms.builder.LocalBuilder(f_build=build_candidate, timeout_sec=BUILDER_TIMEOUT_S),
        runner=ms.runner.LocalRunner(timeout_sec=RUNNER_TIMEOUT_S, evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=1, min_repeat_ms=0, enable_cpu_cache_flush=False)),
        # The XGBoost cost model only pays off over many trials per task (and needs xgboost).
        cost_model="random" if small or not _has("xgboost") else "xgb")
    return time.perf_counter() - started


def build_candidate(module: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's ``default_build`` without its ``import tvm.s_tir.tensor_intrin``.

    That import registers every tensor intrinsic of every target by parsing TVMScript: 22 s of CPU
    (a minute of wall time on this busy 2-core machine) in each fresh builder worker, and LocalBuilder
    starts fresh workers for every batch. It is what made nearly every candidate build hit the default
    30 s timeout. CPU float schedules use no tensor intrinsics, so the build does not need them.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(module), target=target)


def apply_records(module: Any, target: Any, records: Path) -> tuple[Any, int]:
    """Replace tuned tasks by their best records; returns the module and how many tasks had one."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(work_dir=str(records))
    with target, database:
        applied = relax.transform.MetaScheduleApplyDatabase()(module)
    return applied, count_scheduled(applied)


def count_scheduled(module: Any) -> int:
    """How many TIR functions of ``module`` carry a schedule (dlight and MetaSchedule both mark them)."""
    from tvm import tirx

    return sum(1 for _, func in module.functions_items()
               if isinstance(func, tirx.PrimFunc) and func.attrs is not None
               and int(func.attrs.get("tirx.is_scheduled", 0)) == 1)


def count_functions(module: Any) -> int:
    from tvm import tirx

    return sum(1 for _, func in module.functions_items() if isinstance(func, tirx.PrimFunc))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
