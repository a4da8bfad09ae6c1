"""The compile pipeline behind ``prunec compile``: prune, lower for a device target, verify, report.

``compile_model(loaded, CompileJob(...), out)`` runs straight-line named steps (in two halves,
:func:`prune_and_export` and :func:`lower_and_verify`, so that one pruned program can be lowered
several ways):
resolve the target and backend → prune (kept widths optionally rounded to the target's multiple)
(:func:`prunec.pipeline.run_pruning`) → export the pruned module (``torch.export``) → lower with
the backend → verify the artefact against the pruned PyTorch module → time it → write
``manifest.json`` and ``report.md``. Everything lands in ``out`` atomically.

That is the *graph* artefact (fixed input shapes). A causal LM compiled with the onnx backend
becomes a *decoder* folder instead (``--artifact auto``/``genai``, :mod:`prunec.compile_llm`):
ONNX Runtime GenAI's model builder lowers the pruned model with a KV cache and its tokenizer, and
verification compares greedy continuations.
"""

from __future__ import annotations

import copy
import hashlib
import math
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
from prunec.generate import GENAI_KIND
from prunec.models import LoadedModel
from prunec.output import atomic_output_dir
from prunec.pipeline import PruneJob, PruneOutcome, run_pruning
from prunec.targets.backend import ACTIVATION_MODES, Artifact, Backend, CompileOptions, get_backend
from prunec.targets.onnx_weights import WEIGHT_ONLY_MODES
from prunec.targets.preset import TargetPreset, load_preset

MANIFEST = "manifest.json"
REPORT = "report.md"
# Default tolerances (see :func:`verify`): float artefacts, max abs difference relative to
# max(1, max |reference|); quantised artefacts, relative L2 error of each output, per mode. These
# limits catch gross lowering errors, not quality (judge that by a task metric). Measured on
# SmolLM2-135M pruned to 80% (benchmarks/README.md): int8 dynamic 0.28 per-channel, 0.37 per-tensor
# (WikiText-2 perplexity 56 -> 85 / 94); weight-only modes keep activations in float and land far
# closer, so their limits are tighter.
FLOAT_TOLERANCE = 1e-3
INT8_TOLERANCE = 0.5
QUANTIZED_TOLERANCE = {"dynamic": INT8_TOLERANCE, "static": INT8_TOLERANCE, "int8-weights": 0.1}
# What a compile writes: auto picks the decoder folder for causal LMs the onnx backend can hand to
# ONNX Runtime GenAI's builder (prunec.compile_llm.choose_artifact), the graph otherwise.
ARTIFACT_KINDS = ("auto", "graph", "genai")
GRAPH_KIND = "graph"


def quantize_modes() -> tuple[str, ...]:
    """Every ``--quantize`` mode: none, the int8 activation modes and the weight-only schemes of
    :data:`prunec.targets.onnx_weights.WEIGHT_ONLY_MODES` (a registry: adding a scheme adds a mode)."""
    return ("none", *ACTIVATION_MODES, *WEIGHT_ONLY_MODES)


@dataclass(frozen=True)
class CompileJob:
    """What ``prunec compile`` lets a user choose besides the model and the output directory."""

    target: str = "x86-64"                 # built-in preset name or a .toml preset file
    backend: str = "onnx"
    prune: PruneJob = field(default_factory=PruneJob)
    quantize: str = "none"                 # one of quantize_modes() (static needs calibration data)
    round_widths: bool = True              # round kept channel/residual widths to the target's width_multiple
    tuning: str = "default"                # backend specific (tvm)
    tuning_trials: int = 0
    threads: int = 2                       # for verification and latency; 0: the runtime's default
    latency_repeat: int = 20               # timed runs (median reported); 0 skips timing
    tolerance: float | None = None         # None: FLOAT_TOLERANCE, or the mode's QUANTIZED_TOLERANCE / INT8_TOLERANCE
    dump_ir: Path | None = None            # write the IR of every stage (traced, pruned, each cleanup pass) here
    artifact: str = "auto"                 # one of ARTIFACT_KINDS: auto (decoder for causal LMs), graph, genai
    min_agreement: float | None = None     # decoder: minimum token agreement (None: prunec.llm_verify.MIN_AGREEMENT)

    def resolved(self) -> "CompileJob":
        """Validate the options that need no model (raises :class:`ConfigError`)."""
        if self.quantize not in quantize_modes():
            raise ConfigError(f"unknown --quantize '{self.quantize}'; choose one of {', '.join(quantize_modes())}")
        if self.quantize == "static" and self.prune.calib is None:
            raise ConfigError("--quantize static needs calibration data: pass --calib FILE")
        if self.threads < 0 or self.latency_repeat < 0:
            raise ConfigError("--threads and --repeat must be >= 0")
        if self.tolerance is not None and self.tolerance <= 0:
            raise ConfigError("--tolerance must be > 0")
        if self.artifact not in ARTIFACT_KINDS:
            raise ConfigError(f"unknown --artifact '{self.artifact}'; choose one of {', '.join(ARTIFACT_KINDS)}")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement must be in (0, 1], got {self.min_agreement}")
        if self.dump_ir is not None and Path(self.dump_ir).exists() and any(Path(self.dump_ir).iterdir()):
            raise ConfigError(f"IR dump directory {self.dump_ir} is not empty; choose an empty or new directory")
        return replace(self, prune=self.prune.resolved())

    @property
    def effective_tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return FLOAT_TOLERANCE if self.quantize == "none" else QUANTIZED_TOLERANCE.get(self.quantize, INT8_TOLERANCE)


def resolve_target(job: CompileJob) -> tuple[TargetPreset, Backend]:
    """The preset and backend a job names; raises TargetError/ConfigError/ToolchainError up front,
    before any model is loaded."""
    preset = load_preset(job.target)
    backend = get_backend(job.backend)
    reason = backend.missing(preset)
    if reason:
        raise ToolchainError(f"backend {job.backend} cannot compile for {preset.name} here: {reason}")
    return preset, backend


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
           reference: Sequence[np.ndarray], tolerance: float, metric: str = "max_abs") -> dict[str, Any]:
    """Run the artefact and compare with the PyTorch reference; raises :class:`VerificationError`.

    ``metric`` ``max_abs``: max |artefact - reference| <= tolerance x max(1, max |reference|) (float
    artefacts, which differ only by fusion and summation order). ``relative_l2``: ||artefact -
    reference|| / ||reference|| <= tolerance, per output (int8 artefacts: every weight moves by up to
    half a quantisation step, so the largest single difference among millions of logits says little).
    """
    outputs = runner(inputs)
    if len(outputs) != len(reference):
        raise VerificationError(f"the artefact returns {len(outputs)} outputs, PyTorch {len(reference)}")
    diff, scale, rel = 0.0, 1.0, 0.0
    for got, want in zip(outputs, reference):
        if got.shape != want.shape:
            raise VerificationError(f"artefact output shape {got.shape} differs from PyTorch's {want.shape}")
        if not want.size:
            continue
        delta = got.astype(np.float64) - want.astype(np.float64)
        diff = max(diff, float(np.abs(delta).max()))
        scale = max(scale, float(np.abs(want).max()))
        rel = max(rel, float(np.linalg.norm(delta.ravel()) / max(np.linalg.norm(want.astype(np.float64).ravel()), 1e-12)))
    if metric == "relative_l2":
        value, limit, what = rel, tolerance, "relative L2 error"
    else:
        value, limit, what = diff, tolerance * scale, "max |artefact - PyTorch|"
    if not value <= limit:
        raise VerificationError(f"compiled artefact differs from PyTorch: {what} {value:.3g} > {limit:.3g}; the "
                                f"lowering changed the numbers, try another --backend or --quantize none, or loosen "
                                f"--tolerance")
    return {"max_abs_diff": diff, "relative_l2_error": rel, "metric": metric, "tolerance": limit}


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
                   steps: dict[str, float], notes: dict[str, str],
                   artifact_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest: what was compiled, how, the files, verification, latency. ``artifact_info`` says
    what kind of artefact it is (default: a graph; for token inputs, their length is the context)."""
    summary = outcome.summary
    if artifact_info is None:
        tokens = [s.shape for s in artifact.inputs if np.dtype(s.dtype).kind in "iu" and s.shape]
        artifact_info = {"kind": GRAPH_KIND, "max_context": int(tokens[0][-1]) if tokens else None}
    return {
        "format": 1,
        "model": loaded.name or loaded.source,
        "target": preset.name,
        "target_preset": asdict(preset),
        "backend": job.backend,
        "backend_details": artifact.details,
        "artifact": artifact_info,
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


def _graph_verification(m: dict[str, Any]) -> str:
    v = m["verification"]
    return (f"max |artefact - PyTorch| = {v['max_abs_diff']:.3g}, relative L2 error {v['relative_l2_error']:.3g} "
            f"(checked: {v['metric']} <= {v['tolerance']:.3g})")


def _decoder_verification(m: dict[str, Any]) -> str:
    v = m["verification"]
    return (f"greedy token agreement {v['greedy_agreement']:.2f}, teacher-forced {v['teacher_forced_agreement']:.2f} "
            f"over {len(v['prompts'])} prompts x {v['new_tokens']} new tokens (checked: {v['metric']} >= "
            f"{v['tolerance']:.2f}); first-token logits max |artefact - PyTorch| "
            f"{v['first_token_logits_max_abs_diff']:.3g}")


def _graph_latency(m: dict[str, Any]) -> str:
    lat = m["latency"]
    return f"median {lat['median_ms']} ms over {lat['repeat']} runs, {m['threads']} threads, {lat['where']}"


def _decoder_latency(m: dict[str, Any]) -> str:
    lat = m["latency"]
    return (f"time to first token {lat['time_to_first_token_ms']} ms ({lat['prefill_tokens']}-token prompt), "
            f"prefill {lat['prefill_tokens_per_s']} tokens/s, decode {lat['decode_tokens_per_s']} tokens/s, "
            f"{m['threads']} threads, {lat['where']}")


def _gguf_verification(m: dict[str, Any]) -> str:
    v = m["verification"]
    return (f"llama.cpp: greedy token agreement {v['greedy_agreement']:.2f}, teacher-forced "
            f"{v['teacher_forced_agreement']:.2f} over {len(v['prompts'])} prompts x {v['new_tokens']} new tokens "
            f"(checked: {v['metric']} >= {v['tolerance']:.2f}); example logits max |llama.cpp - PyTorch| "
            f"{v['example_logits_max_abs_diff']:.3g}")


# Per artefact kind: one line for the verification and one for the latency (report and CLI).
SUMMARY_LINES: dict[str, tuple[Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], str]]] = {
    GRAPH_KIND: (_graph_verification, _graph_latency),
    GENAI_KIND: (_decoder_verification, _decoder_latency),
    "gguf": (_gguf_verification, _decoder_latency),
}


def verification_line(manifest: dict[str, Any]) -> str:
    """How the artefact was verified, in one line."""
    return SUMMARY_LINES[manifest.get("artifact", {}).get("kind", GRAPH_KIND)][0](manifest)


def latency_line(manifest: dict[str, Any]) -> str:
    """What timing the artefact gave, in one line ("not measured" without)."""
    if not manifest["latency"]:
        return "not measured"
    return SUMMARY_LINES[manifest.get("artifact", {}).get("kind", GRAPH_KIND)][1](manifest)


def markdown(manifest: dict[str, Any]) -> str:
    """The human-readable report beside the manifest."""
    m = manifest
    art = m.get("artifact", {})
    lines = [
        f"# prunec compile {m['model']} for {m['target']} ({m['backend']})", "",
        f"- params: {m['params_before']:,} -> {m['params_after']:,}",
        f"- FLOPs: {m['flops_before']:,} -> {m['flops_after']:,} "
        f"({m['flops_after'] / max(m['flops_before'], 1):.3f} of the original)",
        f"- quantisation: {m['quantize']}",
        f"- artefact: {art.get('kind', GRAPH_KIND)}"
        + (f", max context {art['max_context']} tokens" if art.get("max_context") else ""),
        f"- verification: {verification_line(m)}; pruned vs original: {m['max_abs_diff_pruned_vs_original']:.3g}",
        f"- latency: {latency_line(m)}",
        "", "## Inputs and outputs", "", "| role | name | shape | dtype |", "|---|---|---|---|",
    ]
    for role in ("inputs", "outputs"):
        lines += [f"| {role[:-1]} | {s['name']} | {list(s['shape'])} | {s['dtype']} |" for s in m[role]]
    if "prompts" in m["verification"]:
        lines += ["", "## Greedy continuations", "", "| prompt | PyTorch | artefact | agreement |", "|---|---|---|---|"]
        lines += [f"| {_cell(p['prompt'])} | {_cell(p['pytorch'])} | {_cell(p['artefact'])} | {p['agreement']:.2f} |"
                  for p in m["verification"]["prompts"]]
    if art.get("layer_widths"):
        lines += ["", "## Layer widths", "", "| layer | " + " | ".join(art["layer_widths"][0]) + " |",
                  "|---|" + "---|" * len(art["layer_widths"][0])]
        lines += [f"| {i} | " + " | ".join(str(v) for v in w.values()) + " |" for i, w in enumerate(art["layer_widths"])]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {f['path']} | {f['bytes']:,} | `{f['sha256']}` |" for f in m["files"]]
    lines += ["", "## Steps (seconds)", ""] + [f"- {k}: {v}" for k, v in m["step_seconds"].items()]
    if m["notes"]:
        lines += ["", "## Notes", ""] + [f"- {k}: {v}" for k, v in m["notes"].items()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class PrunedProgram:
    """The front half of a compile: the pruned model exported, with the inputs it was traced on and
    the PyTorch reference outputs the artefact is verified against."""

    outcome: PruneOutcome
    program: torch.export.ExportedProgram | None  # None when only a decoder folder is written (no export)
    inputs: list[np.ndarray]
    reference: list[np.ndarray]
    calibration: tuple[tuple[np.ndarray, ...], ...]
    steps: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _timed(steps: dict[str, float], on_stage: Callable[[str], None], name: str, fn: Callable[[], Any]) -> Any:
    on_stage(name)
    start = time.perf_counter()
    value = fn()
    steps[name] = round(time.perf_counter() - start, 3)
    return value


def cleanup_pruned(loaded: LoadedModel, outcome: PruneOutcome, dump_ir: Path | None = None) -> None:
    """Run the post-pruning pass pipeline (``remove-noops`` to a fixed point, ``dce``) on the pruned graph.

    Pruning leaves views and copies that became no-ops; removing them before lowering keeps the
    artefact lean. With ``dump_ir``, the IR of every stage goes there (:class:`DumpIR`):
    ``000_input.txt`` (the traced, unpruned model), ``001_structured-removal.txt`` (the pruned graph),
    then one file per cleanup pass; ``prunec diff`` compares any two of them.
    """
    from prunec.instruments import DumpIR
    from prunec.pass_api import PassResult
    from prunec.pass_loading import load_builtin_passes
    from prunec.pass_manager import Step, run_passes
    from prunec.trace import trace

    load_builtin_passes()
    pruned = outcome.result.module
    steps = [Step.of("remove-noops", fixed_point=True), Step.of("dce")]
    start = pruned
    if dump_ir is not None:
        # The pruned graph replaces the traced one in one (non-exact) step, so both are dumped in order.
        start = trace(loaded.model, outcome.args, outcome.kwargs)
        steps.insert(0, Step.custom("structured-removal", lambda _gm: PassResult(pruned, True), exact=False))
    result = run_passes(start, steps, instruments=[DumpIR(dump_ir)] if dump_ir is not None else [])
    outcome.result.module = result.graph_module


def prune_and_export(loaded: LoadedModel, job: CompileJob, preset: TargetPreset,
                     on_stage: Callable[[str], None] = lambda _: None, *, export: bool = True) -> PrunedProgram:
    """Round widths (optional) → prune → export (unless ``export`` is off) → reference outputs →
    calibration inputs (static int8)."""
    steps: dict[str, float] = {}
    notes: dict[str, str] = {}
    prune_job = job.prune
    if job.round_widths:
        # The preset's vector width, and the backend's kernels' (llama.cpp: rows of multiples of 32).
        multiple = math.lcm(preset.width_multiple, getattr(get_backend(job.backend), "width_multiple", 1))
        prune_job = replace(prune_job, round_to=multiple)
        notes["width_rounding"] = f"kept channel/residual widths rounded to multiples of {multiple}"
    outcome = _timed(steps, on_stage, "prune", lambda: run_pruning(loaded, prune_job, on_stage))
    if export or job.dump_ir is not None:
        # A decoder is written back from the pruned module itself: the passes rename parameters (DCE
        # keeps one name of a tied table), so without export they run on a copy, only to be dumped.
        kept = None if export else copy.deepcopy(outcome.result.module)
        _timed(steps, on_stage, "cleanup passes", lambda: cleanup_pruned(loaded, outcome, job.dump_ir))
        if kept is not None:
            outcome.result.module = kept
    program = _timed(steps, on_stage, "export", lambda: export_program(outcome)) if export else None
    inputs = flat_inputs(outcome.args, outcome.kwargs)
    with torch.no_grad():
        reference = flat_outputs(outcome.result.module(*outcome.args, **outcome.kwargs))
    calibration = _timed(steps, on_stage, "read calibration", lambda: calibration_inputs(loaded, prune_job, inputs)) \
        if job.quantize == "static" else ()
    return PrunedProgram(outcome, program, inputs, reference, calibration, steps, notes)


def lower_and_verify(loaded: LoadedModel, pruned: PrunedProgram, job: CompileJob, output: Path, *,
                     overwrite: bool = False, on_stage: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Lower → load the runtime → verify → time → write the manifest and report, atomically into ``output``.

    ``pruned`` may be lowered more than once (float and int8, several targets) with different jobs.
    This writes the graph artefact; :func:`prunec.compile_llm.lower_and_verify_decoder` the decoder.
    """
    if pruned.program is None:
        raise ConfigError("this pruned model was not exported; call prune_and_export(..., export=True)")
    steps, notes = dict(pruned.steps), dict(pruned.notes)
    preset, backend = _timed(steps, on_stage, "resolve target", lambda: resolve_target(job))
    if job.quantize == "static" and not pruned.calibration:
        raise ConfigError("--quantize static needs calibration data: pass --calib FILE")
    options = CompileOptions(quantize=job.quantize, tuning=job.tuning, tuning_trials=job.tuning_trials,
                             threads=job.threads, calibration=pruned.calibration)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        artifact = _timed(steps, on_stage, "lower", lambda: backend.compile(pruned.program, pruned.inputs, preset, tmp,
                                                                           options))
        notes.update(artifact.notes)
        runtime_manifest = {"threads": job.threads, "backend_details": artifact.details}
        runner = _timed(steps, on_stage, "load runtime", lambda: backend.runner(tmp, runtime_manifest, preset))
        checks = _timed(steps, on_stage, "verify",
                        lambda: verify(runner, pruned.inputs, pruned.reference, job.effective_tolerance,
                                       "max_abs" if job.quantize == "none" else "relative_l2"))
        latency = None
        if job.latency_repeat:
            latency = _timed(steps, on_stage, "measure latency",
                             lambda: measure_latency(runner, pruned.inputs, job.latency_repeat))
            latency["where"] = artifact.details.get("runs_on", "this host")
        manifest = build_manifest(loaded, job, preset, artifact, pruned.outcome, tmp, checks, latency, steps, notes)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (tmp / REPORT).write_text(markdown(manifest))
    return manifest


def compile_model(loaded: LoadedModel, job: CompileJob, output: Path, *, overwrite: bool = False,
                  on_stage: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Prune ``loaded`` and compile it for ``job.target`` into ``output``; returns the manifest."""
    job = job.resolved()
    if Path(output).exists() and not overwrite:
        raise OutputExistsError(f"output {output} already exists; choose another -o or pass --force to replace it")
    preset, _ = resolve_target(job)
    from prunec.compile_gguf import GGUF_KIND, check_gguf_job, lower_and_verify_gguf  # they import this module
    from prunec.compile_llm import choose_artifact, lower_and_verify_decoder

    if getattr(get_backend(job.backend), "artifact_kind", None) == GGUF_KIND:
        check_gguf_job(loaded, job)
        kind, reason = GGUF_KIND, ""
    else:
        kind, reason = choose_artifact(loaded, job)
    pruned = prune_and_export(loaded, job, preset, on_stage, export=kind == GRAPH_KIND)
    if reason:
        pruned.notes["artifact"] = reason
    lowering = {GRAPH_KIND: lower_and_verify, GENAI_KIND: lower_and_verify_decoder, GGUF_KIND: lower_and_verify_gguf}[kind]
    return lowering(loaded, pruned, job, output, overwrite=overwrite, on_stage=on_stage)


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
    kind = manifest.get("artifact", {}).get("kind", GRAPH_KIND)
    if kind != GRAPH_KIND:
        raise ConfigError(f"{directory} holds a {kind} text decoder, which takes a prompt, not fixed-shape "
                          f"arrays; use prunec generate {directory} --prompt TEXT, or prunec bench {directory}")
    missing = [k for k in ("backend", "target_preset", "inputs", "outputs") if k not in manifest]
    if missing:
        raise ConfigError(f"{Path(directory) / MANIFEST} lacks {', '.join(missing)}; recompile with prunec compile")
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
    try:
        return TargetPreset(**data)
    except TypeError as exc:
        raise ConfigError(f"the manifest's target_preset does not fit this prunec ({exc}); recompile") from None
