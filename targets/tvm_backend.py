"""The TVM backend: Relax import from the exported program, build for the preset's LLVM target,
export a shared library (cross compiled for a foreign architecture), run it natively or under qemu.

Lowering is a straight pipeline (see :func:`lower`): import → legalise and fuse → schedule (the
``tuning`` option) → build → export. Scheduling decides the speed: TVM's default CPU pipeline emits
naive single-threaded loops, so ``dlight`` applies the CPU dlight rules, and ``metaschedule`` tunes the
fused tasks on this host and caches the records per (target, model) (see :mod:`.tvm_tuning`).

Running: on the host the library runs in-process in the TVM Python runtime; for a foreign
architecture a small C++ runner (``runtime/runner.cc``) is built against that architecture's TVM
runtime and run under the preset's emulator (see :mod:`.tvm_runtime`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from prunec.errors import ConfigError, ToolchainError
from prunec.targets.backend import Artifact, CompileOptions, Runner, TensorSpec, io_names, register_backend
from prunec.targets.preset import TargetPreset, host_arch, missing_host_features, wider_host_presets

LIBRARY_FILE = "model.so"
CONV2D_LAYOUT = ("NHWC", "HWIO")  # activations, weights (see legalize_and_fuse)
TUNINGS = ("none", "dlight", "metaschedule")
# "default" (what CompileOptions carries unless the user picks) means: MetaSchedule records from the
# cache when this (target, model) was tuned before, dlight rules otherwise. Never tunes by itself.
DEFAULT_TUNING = "default"

# Debian packages that provide the tools a preset names (what `missing` tells the user to install).
TOOL_PACKAGES = {
    "g++": "g++",
    "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
    "arm-linux-gnueabihf-g++": "g++-arm-linux-gnueabihf",
    "riscv64-linux-gnu-g++": "g++-riscv64-linux-gnu",
    "qemu-aarch64": "qemu-user",
    "qemu-arm": "qemu-user",
    "qemu-riscv64": "qemu-user",
}


def _install_hint(tool: str) -> str:
    package = TOOL_PACKAGES.get(tool)
    return f"apt-get install {package}" if package else f"install {tool} and put it on PATH"


def missing_tool(tool: str) -> str | None:
    """Why ``tool`` cannot be used (None when it is on PATH)."""
    if shutil.which(tool):
        return None
    return f"{tool} is not installed ({_install_hint(tool)})"


@register_backend("tvm")
class TvmBackend:
    """Apache TVM (Relax) lowering to a shared library per target preset."""

    name = "tvm"

    def missing(self, preset: TargetPreset) -> str | None:
        if importlib.util.find_spec("tvm") is None or importlib.util.find_spec("tvm_ffi") is None:
            return "the tvm backend needs apache-tvm: pip install 'prunec[tvm]'"
        if preset.is_host:
            lacking = missing_host_features(preset)
            if lacking:  # the library would die of an illegal instruction when verified
                return (f"this host's CPU lacks {', '.join(lacking)}, which target {preset.name} compiles for; "
                        f"choose a target this CPU runs (x86-64 for AVX2), or --backend onnx")
            # export_library links the host library with $CXX (TVM's default: g++).
            return missing_tool(os.environ.get("CXX", "g++"))
        from prunec.targets import tvm_runtime

        for tool in (preset.cross_compiler, preset.emulator):
            if not tool:
                return f"target {preset.name} is {preset.arch} (not this {host_arch()} host) but its preset " \
                       f"names no cross compiler or emulator; add them under [toolchain]"
            reason = missing_tool(tool)
            if reason:
                return reason
        return tvm_runtime.runtime_unavailable(preset.arch)

    def compile(self, program: torch.export.ExportedProgram, example_inputs: Sequence[np.ndarray],
                preset: TargetPreset, out_dir: Path, options: CompileOptions) -> Artifact:
        tuning = options.tuning
        if tuning not in TUNINGS + (DEFAULT_TUNING,):
            raise ConfigError(f"unknown tuning '{tuning}' for the tvm backend; choose one of {', '.join(TUNINGS)}")
        if options.quantize != "none":
            raise ConfigError("the tvm backend compiles float models only; drop --quantize or use --backend onnx")
        lowered = lower(program, preset, tuning, options.tuning_trials, Path(out_dir) / LIBRARY_FILE)
        input_names, output_names = io_names(program)
        inputs = [TensorSpec(n, tuple(a.shape), str(a.dtype)) for n, a in zip(input_names, example_inputs)]
        outputs = [TensorSpec(n, tuple(int(d) for d in v.shape), str(v.dtype).removeprefix("torch."))
                   for n, v in zip(output_names, _output_values(program))]
        if preset.is_host:
            runs_on = f"TVM {lowered['tvm']} runtime in-process on this {host_arch()} host"
        else:
            runs_on = (f"C++ runner under {preset.emulator} on this {host_arch()} host "
                       f"(emulated: times are not {preset.arch} device latency)")
        notes = {}
        if lowered["tuning"] == "dlight":
            notes["untuned"] = untuned_note(preset, lowered["tuning_records"])
        wider = wider_host_presets(preset)
        if wider:
            notes["wider_target"] = (f"this CPU also runs --target {' or '.join(wider)}; TVM's kernels only use "
                                     f"the vector features the target names (ONNX Runtime picks them at run time)")
        return Artifact(files=[LIBRARY_FILE], inputs=inputs, outputs=outputs, notes=notes,
                        details={**lowered, "runtime_file": LIBRARY_FILE, "runs_on": runs_on})

    def runner(self, out_dir: Path, manifest: dict[str, Any], preset: TargetPreset) -> Runner:
        library = Path(out_dir) / manifest.get("backend_details", {}).get("runtime_file", LIBRARY_FILE)
        if not library.is_file():
            raise ToolchainError(f"{library} is missing; recompile with prunec compile --backend tvm")
        threads = int(manifest.get("threads", 0))
        from prunec.targets import tvm_runtime

        if preset.is_host:
            return tvm_runtime.in_process_runner(library, threads)
        return tvm_runtime.emulated_runner(library, preset, threads)


def untuned_note(preset: TargetPreset, records: str) -> str:
    """What the user can do about kernels that run on dlight schedules (no measurement).

    ``records`` is the folder ``--tuning default`` looked in ('' when it did not look: ``--tuning dlight``).
    """
    from prunec.targets.tvm_runtime import cache_dir

    records = records or str(cache_dir() / "tvm-tuning" / preset.name / "<model key>")
    measured = ("tuned kernels ran 3.0x faster than dlight on the ResNet-50 shape and SmolLM2-135M prefill "
                "on a 2-core AVX-512 host, after 15-18 minutes of tuning at 64 trials per task; docs/tvm.md")
    if preset.is_host:
        return f"kernels use dlight schedules, not tuned: --tuning metaschedule --tuning-trials 64 tunes them here ({measured})"
    return (f"kernels use dlight schedules, not tuned: MetaSchedule measures on the device, so tune this model there "
            f"and copy the records to {records}; the next compile uses them ({measured})")


def _output_values(program: torch.export.ExportedProgram) -> list[Any]:
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    flat = torch.utils._pytree.tree_leaves(output_node.args[0])
    return [n.meta["val"] for n in flat if hasattr(n, "meta") and "val" in n.meta]


def lower(program: torch.export.ExportedProgram, preset: TargetPreset, tuning: str, trials: int,
          library: Path) -> dict[str, Any]:
    """Import, fuse, schedule, build and export ``program`` to ``library``; returns build details."""
    import tvm
    import tvm_ffi

    from prunec.targets import tvm_tuning

    target = tvm.target.Target(tvm_target(preset))
    started = time.perf_counter()
    module = import_program(program)
    module = legalize_and_fuse(module, target)
    schedule = tvm_tuning.schedule(module, target, preset, tuning, trials)
    try:
        built = tvm.compile(schedule.module, target=target)
    except tvm.error.InternalError as exc:  # e.g. LLVM codegen rejecting a scheduled task: no half-written output
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no message"
        raise ToolchainError(f"TVM failed to build this model with --tuning {schedule.tuning} ({message}); "
                             f"try another --tuning, or use --backend onnx") from None
    export_library(built, preset, library)
    return {"tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__, "target": json.dumps(tvm_target(preset)),
            "tuning": schedule.tuning, "tuning_records": schedule.records_dir, "tuned_tasks": schedule.tuned_tasks,
            "tasks": schedule.tasks, "scheduled_tasks": schedule.scheduled, "tuning_seconds": round(schedule.seconds, 1),
            "lower_seconds": round(time.perf_counter() - started, 1)}


def tvm_target(preset: TargetPreset) -> dict[str, Any]:
    """The preset's TVM target; for the host also its core count, which MetaSchedule requires."""
    target = preset.tvm_target()
    if preset.is_host:
        target["num-cores"] = os.cpu_count() or 1
    return target


def import_program(program: torch.export.ExportedProgram) -> Any:
    """The Relax module of an exported program, weights bound as constants.

    The importer's departures from PyTorch's semantics are corrected right away
    (:mod:`.tvm_import_fixes`), so every later step sees what the program means.
    """
    from tvm.relax.frontend.torch import from_exported_program

    from prunec.targets.tvm_import_fixes import fix_imported_module

    try:
        with torch.no_grad():
            module = from_exported_program(program, keep_params_as_input=False)
    except (AssertionError, KeyError, NotImplementedError, ValueError) as exc:
        raise ToolchainError(f"TVM's PyTorch importer cannot convert this model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); "
                             f"use --backend onnx") from None
    return fix_imported_module(module)


def legalize_and_fuse(module: Any, target: Any, conv2d_layout: tuple[str, str] | None = CONV2D_LAYOUT,
                      share_tied: bool = True) -> Any:
    """Lower Relax ops to TIR and fuse them into the tasks that scheduling and tuning work on.

    First 2-D convolutions move to NHWC activations and HWIO weights (``CONV2D_LAYOUT``; ``None``
    keeps NCHW): output channels become the contiguous axis that the CPU schedules vectorise, where
    NCHW only offers the image width (7-56 in a ResNet). The weight transposes fold into the
    constants; activations are transposed where the layout changes. With the dlight schedule on this
    AVX-512 host the ResNet-50 shape took 124 ms against 426 ms in NCHW
    (``benchmarks/tvm_latency.py --variants dlight,dlight-nchw``). Then the steps of
    ``relax.pipeline.static_shape_tuning_pipeline`` before its tuning; MetaSchedule records match
    tasks made by this function (TVM's own pipeline keeps NCHW). A tied embedding and LM head keep
    one table rather than two after constant folding (``share_tied``, :mod:`.tvm_tied_tables`).
    """
    import tvm
    from tvm import relax

    from prunec.targets.tvm_tied_tables import share_tied_tables

    if share_tied:
        module = share_tied_tables(module)

    layout = [relax.transform.ConvertLayout({"relax.nn.conv2d": list(conv2d_layout)})] if conv2d_layout else []
    with target:
        return tvm.transform.Sequential([
            *layout,
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.pipeline.zero_pipeline(),
        ])(module)


def export_library(built: Any, preset: TargetPreset, library: Path) -> None:
    """Link the built module into a shared library: host g++, or the preset's cross compiler."""
    if preset.is_host:
        built.export_library(str(library))
        return
    from tvm.support import cc

    reason = missing_tool(preset.cross_compiler)
    if reason:
        raise ToolchainError(f"cannot link the {preset.name} library: {reason}")
    try:
        built.export_library(str(library), fcompile=cc.cross_compiler(preset.cross_compiler))
    except RuntimeError as exc:
        raise ToolchainError(f"{preset.cross_compiler} failed to link the {preset.name} library: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
