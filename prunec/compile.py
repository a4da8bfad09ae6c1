"""The compile pipeline behind ``prunec compile``: prune, lower for a device target, verify, report.

``compile_model(loaded, CompileJob(...), out)`` runs straight-line named steps:
resolve the target and backend → (round pruned widths to the target's multiple) → prune
(:func:`prunec.pipeline.run_pruning`) → export the pruned module (``torch.export``) → lower with
the backend → verify the artefact against the pruned PyTorch module → time it → write
``manifest.json`` and ``report.md``. Everything lands in ``out`` atomically.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.utils._pytree as pytree

from prunec.errors import ConfigError, OutputExistsError, ToolchainError, VerificationError
from prunec.models import LoadedModel
from prunec.output import atomic_output_dir
from prunec.pipeline import PruneJob, PruneOutcome, run_pruning
from prunec.targets.backend import Artifact, Backend, CompileOptions, get_backend
from prunec.targets.preset import TargetPreset, load_preset

MANIFEST = "manifest.json"
REPORT = "report.md"
QUANTIZE_MODES = ("none", "dynamic", "static")
# Default tolerances, relative to max(1, max |reference|). Float artefacts only differ from PyTorch by
# operator fusion and summation order; int8 changes every weight by up to half a quantisation step.
FLOAT_TOLERANCE = 1e-3
INT8_TOLERANCE = 0.25


@dataclass(frozen=True)
class CompileJob:
    """What ``prunec compile`` lets a user choose besides the model and the output directory."""

    target: str = "x86-64"                 # built-in preset name or a .toml preset file
    backend: str = "onnx"
    prune: PruneJob = field(default_factory=PruneJob)
    quantize: str = "none"                 # none, dynamic, static (int8 needs calibration data)
    round_widths: bool = False             # round kept channel widths to the target's width_multiple
    tuning: str = "default"                # backend specific (tvm)
    tuning_trials: int = 0
    threads: int = 2                       # for verification and latency; 0: the runtime's default
    latency_repeat: int = 20               # timed runs (median reported); 0 skips timing
    tolerance: float | None = None         # None: FLOAT_TOLERANCE or INT8_TOLERANCE

    def resolved(self) -> "CompileJob":
        """Validate the options that need no model (raises :class:`ConfigError`)."""
        if self.quantize not in QUANTIZE_MODES:
            raise ConfigError(f"unknown --quantize '{self.quantize}'; choose one of {', '.join(QUANTIZE_MODES)}")
        if self.quantize == "static" and self.prune.calib is None:
            raise ConfigError("--quantize static needs calibration data: pass --calib FILE")
        if self.threads < 0 or self.latency_repeat < 0:
            raise ConfigError("--threads and --repeat must be >= 0")
        if self.tolerance is not None and self.tolerance <= 0:
            raise ConfigError("--tolerance must be > 0")
        return replace(self, prune=self.prune.resolved())

    @property
    def effective_tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return FLOAT_TOLERANCE if self.quantize == "none" else INT8_TOLERANCE


def resolve_target(job: CompileJob) -> tuple[TargetPreset, Backend]:
    """The preset and backend a job names; raises TargetError/ConfigError/ToolchainError up front,
    before any model is loaded."""
    preset = load_preset(job.target)
    backend = get_backend(job.backend)
    reason = backend.missing(preset)
    if reason:
        raise ToolchainError(f"backend {job.backend} cannot compile for {preset.name} here: {reason}")
    return preset, backend


def round_widths(loaded: LoadedModel, job: PruneJob, multiple: int) -> tuple[PruneJob, str]:
    """Turn a uniform ``ratio`` on ``channels`` into an explicit width rounded to ``multiple``.

    Applies when the job prunes only channels, by ratio, with uniform allocation, and every channel
    group has the same size (transformer FFNs); otherwise the job is returned unchanged with the
    reason. Returns the job and a note for the manifest.
    """
    from prunec.allocation import uniform_count
    from prunec.prune import analyze, select_groups

    if multiple <= 1:
        return job, "target width_multiple is 1"
    if job.kind_tuple != ("channels",) or job.budget or job.widths or job.allocation != "uniform" or job.steps > 1:
        return job, "rounding applies to --kinds channels with --ratio and uniform allocation only"
    analysis = analyze(loaded.model, loaded.args, loaded.kwargs, ignore=job.ignore)
    groups = select_groups(analysis, ("channels",))
    sizes = {g.size for g in groups}
    if len(sizes) != 1:
        return job, f"channel groups have {len(sizes)} different sizes; rounding needs one common size"
    group = groups[0]
    keep = group.size - uniform_count(group, job.ratio)
    rounded = min(group.size, max(multiple, int(round(keep / multiple)) * multiple))
    return replace(job, widths=(("channels", rounded),)), f"kept channels {keep} -> {rounded} (multiple of {multiple})"


def export_program(outcome: PruneOutcome) -> torch.export.ExportedProgram:
    """The pruned module as an exported program (what every backend lowers)."""
    return torch.export.export(outcome.result.module, outcome.args, outcome.kwargs, strict=False)


def flat_inputs(args: tuple, kwargs: dict[str, Any]) -> list[np.ndarray]:
    """Positional numpy inputs in the order of the program's user inputs."""
    return [t.detach().cpu().numpy() for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]


def flat_outputs(output: Any) -> list[np.ndarray]:
    return [t.detach().cpu().numpy() for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)]


def calibration_inputs(loaded: LoadedModel, job: PruneJob, example: Sequence[np.ndarray]) -> tuple[tuple[np.ndarray, ...], ...]:
    """Calibration batches for static int8, restricted to the traced (static) input shapes."""
    from prunec.calibration import CalibrationConfig, load_calibration

    if job.calib is None:
        return ()
    batches = load_calibration(job.calib, loaded.tokenizer, CalibrationConfig(job.calib_samples, job.calib_seq_len))
    shapes = [a.shape for a in example]
    usable = tuple(tuple(t.numpy() for t in b) for b in batches if [tuple(t.shape) for t in b] == shapes)
    if not usable:
        raise ConfigError(f"no calibration batch of {job.calib} has the traced input shapes {shapes}")
    return usable


def verify(runner: Callable[[Sequence[np.ndarray]], list[np.ndarray]], inputs: Sequence[np.ndarray],
           reference: Sequence[np.ndarray], tolerance: float) -> dict[str, Any]:
    """Run the artefact and compare with the PyTorch reference; raises :class:`VerificationError`."""
    outputs = runner(inputs)
    if len(outputs) != len(reference):
        raise VerificationError(f"the artefact returns {len(outputs)} outputs, PyTorch {len(reference)}")
    diff = 0.0
    scale = 1.0
    for got, want in zip(outputs, reference):
        if got.shape != want.shape:
            raise VerificationError(f"artefact output shape {got.shape} differs from PyTorch's {want.shape}")
        if want.size:
            diff = max(diff, float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()))
            scale = max(scale, float(np.abs(want).max()))
    rel = [float(np.linalg.norm((g - w).ravel()) / max(np.linalg.norm(w.ravel()), 1e-12))
           for g, w in zip(outputs, reference) if w.size]
    limit = tolerance * scale
    if not diff <= limit:
        raise VerificationError(f"compiled artefact differs from PyTorch by {diff:.3g} (> {limit:.3g} = "
                                f"{tolerance:g} x {scale:.3g}); the lowering changed the numbers, try another "
                                f"--backend or --quantize none, or loosen --tolerance")
    return {"max_abs_diff": diff, "tolerance": limit, "relative_l2_error": max(rel, default=0.0)}


def measure_latency(runner: Callable[[Sequence[np.ndarray]], list[np.ndarray]], inputs: Sequence[np.ndarray],
                    repeat: int, warmup: int = 3) -> dict[str, Any]:
    """Median (and spread) of ``repeat`` timed runs after ``warmup`` untimed ones, in milliseconds."""
    for _ in range(warmup):
        runner(inputs)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        runner(inputs)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3),
            "max_ms": round(max(times), 3), "repeat": repeat}


def file_entry(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def build_manifest(loaded: LoadedModel, job: CompileJob, preset: TargetPreset, artifact: Artifact,
                   outcome: PruneOutcome, directory: Path, checks: dict[str, Any], latency: dict[str, Any] | None,
                   steps: dict[str, float], notes: dict[str, str]) -> dict[str, Any]:
    summary = outcome.summary
    return {
        "format": 1,
        "model": loaded.name or loaded.source,
        "target": preset.name,
        "target_preset": {k: v for k, v in asdict(preset).items()},
        "backend": job.backend,
        "backend_details": artifact.details,
        "quantize": job.quantize,
        "threads": job.threads,
        "files": [file_entry(directory, name) for name in artifact.files],
        "inputs": [asdict(s) for s in artifact.inputs],
        "outputs": [asdict(s) for s in artifact.outputs],
        "params_before": summary["params_before"],
        "params_after": summary["params_after"],
        "flops_before": summary["flops_before"],
        "flops_after": summary["flops_after"],
        "pruning": {k: summary[k] for k in ("ratio", "budget", "kinds", "importance", "allocation", "calibration",
                                            "reconstruct", "groups_pruned", "units_removed")},
        "max_abs_diff_pruned_vs_original": summary["max_abs_diff_vs_original"],
        "verification": checks,
        "latency": latency,
        "notes": notes,
        "step_seconds": steps,
        "host": {"arch": platform.machine(), "torch": torch.__version__},
    }


def markdown(manifest: dict[str, Any]) -> str:
    """The human-readable report beside the manifest."""
    m = manifest
    lat = m["latency"]
    lines = [
        f"# prunec compile {m['model']} for {m['target']} ({m['backend']})", "",
        f"- params: {m['params_before']:,} -> {m['params_after']:,}",
        f"- FLOPs: {m['flops_before']:,} -> {m['flops_after']:,} "
        f"({m['flops_after'] / max(m['flops_before'], 1):.3f} of the original)",
        f"- quantisation: {m['quantize']}",
        f"- verification: max |artefact - PyTorch| = {m['verification']['max_abs_diff']:.3g} "
        f"(tolerance {m['verification']['tolerance']:.3g}, relative L2 error "
        f"{m['verification']['relative_l2_error']:.3g}); pruned vs original: {m['max_abs_diff_pruned_vs_original']:.3g}",
        f"- latency: " + (f"median {lat['median_ms']} ms over {lat['repeat']} runs, {m['threads']} threads, "
                          f"{lat['where']}" if lat else "not measured"),
        "", "## Inputs and outputs", "", "| role | name | shape | dtype |", "|---|---|---|---|",
    ]
    for role in ("inputs", "outputs"):
        lines += [f"| {role[:-1]} | {s['name']} | {list(s['shape'])} | {s['dtype']} |" for s in m[role]]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {f['path']} | {f['bytes']:,} | `{f['sha256']}` |" for f in m["files"]]
    lines += ["", "## Steps (seconds)", ""] + [f"- {k}: {v}" for k, v in m["step_seconds"].items()]
    if m["notes"]:
        lines += ["", "## Notes", ""] + [f"- {k}: {v}" for k, v in m["notes"].items()]
    return "\n".join(lines) + "\n"


def compile_model(loaded: LoadedModel, job: CompileJob, output: Path, *, overwrite: bool = False,
                  on_stage: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Prune ``loaded`` and compile it for ``job.target`` into ``output``; returns the manifest."""
    steps: dict[str, float] = {}
    notes: dict[str, str] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        on_stage(name)
        start = time.perf_counter()
        value = fn()
        steps[name] = round(time.perf_counter() - start, 3)
        return value

    job = job.resolved()
    if Path(output).exists() and not overwrite:
        raise OutputExistsError(f"output {output} already exists; choose another -o or pass --force to replace it")
    preset, backend = timed("resolve target", lambda: resolve_target(job))
    prune_job = job.prune
    if job.round_widths:
        prune_job, notes["width_rounding"] = timed(
            "round widths", lambda: round_widths(loaded, job.prune, preset.width_multiple))
    outcome = timed("prune", lambda: run_pruning(loaded, prune_job, on_stage))
    program = timed("export", lambda: export_program(outcome))
    inputs = flat_inputs(outcome.args, outcome.kwargs)
    with torch.no_grad():
        reference = flat_outputs(outcome.result.module(*outcome.args, **outcome.kwargs))
    calibration = timed("read calibration", lambda: calibration_inputs(loaded, prune_job, inputs)) \
        if job.quantize == "static" else ()
    options = CompileOptions(quantize=job.quantize, tuning=job.tuning, tuning_trials=job.tuning_trials,
                             threads=job.threads, calibration=calibration)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        artifact = timed("lower", lambda: backend.compile(program, inputs, preset, tmp, options))
        runtime_manifest = {"threads": job.threads, "backend_details": artifact.details}
        runner = timed("load runtime", lambda: backend.runner(tmp, runtime_manifest, preset))
        checks = timed("verify", lambda: verify(runner, inputs, reference, job.effective_tolerance))
        latency = None
        if job.latency_repeat:
            latency = timed("measure latency", lambda: measure_latency(runner, inputs, job.latency_repeat))
            latency["where"] = artifact.details.get("runs_on", "this host")
        manifest = build_manifest(loaded, job, preset, artifact, outcome, tmp, checks, latency, steps, notes)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (tmp / REPORT).write_text(markdown(manifest))
    return manifest


def load_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a compiled directory (raises :class:`ConfigError` naming what is wrong)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{directory} has no {MANIFEST}; pass a directory written by prunec compile")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); recompile with prunec compile") from None


def load_runner(directory: Path, threads: int | None = None) -> tuple[dict[str, Any], Callable[[Sequence[np.ndarray]], list[np.ndarray]]]:
    """The manifest and the backend's runner for a compiled directory (``threads`` overrides the manifest's)."""
    manifest = load_manifest(directory)
    preset = _manifest_preset(manifest)
    backend = get_backend(manifest["backend"])
    reason = backend.missing(preset)
    if reason:
        raise ToolchainError(f"cannot run the {manifest['backend']} artefact here: {reason}")
    if threads is not None:
        manifest = {**manifest, "threads": threads}
    return manifest, backend.runner(Path(directory), manifest, preset)


def _manifest_preset(manifest: dict[str, Any]) -> TargetPreset:
    # The preset is stored whole so that a directory compiled from a user's .toml runs without it.
    data = dict(manifest["target_preset"])
    data["llvm_features"] = tuple(data.get("llvm_features", ()))
    return TargetPreset(**data)
