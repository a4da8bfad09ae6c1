"""The decoder half of ``prunec compile``: a pruned causal LM becomes a folder that generates text.

:func:`choose_artifact` decides, before pruning, whether a compile writes the fixed-length graph or
the decoder folder (``--artifact auto|graph|genai``). :func:`lower_and_verify_decoder` then writes
the pruned model back into its Hugging Face class (:func:`prunec.hf.to_pretrained`), checks that
the rebuilt model computes what the pruned graph computes, lowers it with ONNX Runtime GenAI's
model builder (:mod:`prunec.targets.genai_builder`), compares greedy continuations
(:mod:`prunec.llm_verify`), times prefill and decode (:mod:`prunec.genai_bench`) and writes the
manifest and report, atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from prunec.compile import (FLOAT_TOLERANCE, GRAPH_KIND, MANIFEST, REPORT, CompileJob, PrunedProgram, _timed,
                            build_manifest, flat_outputs, markdown, resolve_target)
from prunec.errors import ConfigError, ToolchainError, VerificationError
from prunec.generate import GENAI_KIND, open_decoder
from prunec.models import LoadedModel
from prunec.output import atomic_output_dir
from prunec.targets.backend import Artifact
from prunec.targets.genai_builder import BUILDER_ARCHITECTURES, build_genai, builder_available, builder_precision, \
    convertible
from prunec.targets.onnx_backend import onnx_signature

# Allocations that give every layer the same widths: the only ones a Hugging Face config (and so
# the builder) can express.
UNIFORM_ALLOCATIONS = frozenset({"uniform"})
# Timing inside compile is a quick look; prunec bench OUT gives the full figures.
COMPILE_PREFILL, COMPILE_DECODE = 128, 32


def choose_artifact(loaded: LoadedModel, job: CompileJob) -> tuple[str, str]:
    """``(kind, reason)``: the artefact a compile writes and, when auto fell back to a graph, why.

    Raises :class:`ConfigError` / :class:`ToolchainError` when a decoder is asked for (explicitly, or
    by auto for a convertible causal LM) but this job cannot give one.
    """
    if job.artifact == "graph":
        return GRAPH_KIND, ""
    causal = convertible(loaded.model) and hasattr(loaded.model, "save_pretrained")
    if job.artifact == "auto":
        if job.backend != "onnx" or not causal:
            return GRAPH_KIND, ""
        if loaded.tokenizer is None:
            return GRAPH_KIND, ("a fixed-length graph, not a text decoder: the model came without a tokenizer "
                                "(pass a Hugging Face directory with tokenizer files, or a .gguf)")
    if job.backend != "onnx":
        raise ConfigError(f"--artifact genai is written by the onnx backend, not {job.backend}; pass --backend onnx")
    if not causal:
        raise ConfigError(f"--artifact genai needs a causal LM of a class the builder converts "
                          f"({', '.join(sorted(BUILDER_ARCHITECTURES))}), not {type(loaded.model).__name__}; "
                          f"use --artifact graph")
    if loaded.tokenizer is None:
        raise ConfigError("the decoder folder needs the model's tokenizer, and this model came without one; pass a "
                          "Hugging Face directory with tokenizer files (or a .gguf), or use --artifact graph")
    builder_precision(job.quantize)  # a --quantize mode the builder has no counterpart for fails here
    if job.prune.allocation not in UNIFORM_ALLOCATIONS:
        raise ConfigError(f"--allocation {job.prune.allocation} gives each layer its own widths, which the "
                          f"onnxruntime-genai decoder cannot hold; compile with --allocation uniform "
                          f"(or --artifact graph for a fixed-length graph)")
    reason = builder_available()
    if reason:
        raise ToolchainError(reason)
    return GENAI_KIND, ""


def rebuild_hf(pruned: PrunedProgram) -> torch.nn.Module:
    """The pruned model as its Hugging Face class, checked against the pruned graph on the traced inputs."""
    outcome = pruned.outcome
    try:
        model = outcome.result.to_pretrained()
    except ConfigError as exc:
        # e.g. per-layer widths (to_pretrained says: use uniform allocation), a Gemma hidden size.
        raise ConfigError(f"the onnxruntime-genai builder converts the model's Hugging Face class, and the pruned "
                          f"model does not fit it: {exc}; or compile with --artifact graph") from None
    with torch.no_grad():
        logits = model(*outcome.args, **outcome.kwargs, use_cache=False).logits.numpy()
        reference = next((r for r in flat_outputs(outcome.result.module(*outcome.args, **outcome.kwargs))
                          if r.shape == logits.shape), None)
    if reference is None:
        raise VerificationError("the pruned graph returns no logits of the rebuilt model's shape; use --artifact graph")
    diff = float(np.abs(logits.astype(np.float64) - reference).max())
    limit = FLOAT_TOLERANCE * max(1.0, float(np.abs(reference).max()))
    if not diff <= limit:
        raise VerificationError(f"the pruned model rebuilt as {type(model).__name__} differs from the pruned graph "
                                f"(max |diff| {diff:.3g} > {limit:.3g}); use --artifact graph and report this model")
    return model


def lower_and_verify_decoder(loaded: LoadedModel, pruned: PrunedProgram, job: CompileJob, output: Path, *,
                             overwrite: bool = False, on_stage: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Rebuild → builder → verify greedy continuations → time → manifest and report, atomically into ``output``."""
    from prunec.genai_bench import bench_decoder
    from prunec.llm_verify import verify_decoder

    steps, notes = dict(pruned.steps), dict(pruned.notes)
    preset, _ = _timed(steps, on_stage, "resolve target", lambda: resolve_target(job))
    model = _timed(steps, on_stage, "rebuild Hugging Face model", lambda: rebuild_hf(pruned))
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        folder = _timed(steps, on_stage, "lower (onnxruntime-genai builder)",
                        lambda: build_genai(model, loaded.tokenizer, tmp, job.quantize))
        info = {"kind": GENAI_KIND, "max_context": folder.max_context, "precision": folder.precision,
                "vocab_size": int(model.config.vocab_size), "chat_template": folder.chat_template,
                "layer_widths": list(folder.layer_widths)}
        provisional = {"artifact": info, "threads": job.threads}
        decoder = _timed(steps, on_stage, "load runtime", lambda: open_decoder(tmp, job.threads, provisional))
        checks = _timed(steps, on_stage, "verify (greedy continuations)",
                        lambda: verify_decoder(model, decoder, job.quantize, min_agreement=job.min_agreement))
        runs_on = f"onnxruntime-genai {folder.builder_version} on this host"
        if not preset.is_host:
            runs_on += f" (the same folder runs on {preset.arch} with onnxruntime-genai; not timed on the device)"
        latency = None
        if job.latency_repeat:
            prefill = min(COMPILE_PREFILL, folder.max_context // 2)
            decode = max(2, min(COMPILE_DECODE, folder.max_context - prefill))
            latency = _timed(steps, on_stage, "measure latency",
                             lambda: bench_decoder(tmp, prefill=prefill, decode=decode,
                                                   repeat=min(job.latency_repeat, 3), threads=job.threads,
                                                   manifest=provisional))
            latency["where"] = runs_on
        del decoder  # release the ORT session before the folder is moved into place
        inputs, outputs = onnx_signature(tmp / "model.onnx")
        artifact = Artifact(files=list(folder.files), inputs=inputs, outputs=outputs, details={
            "runtime": "onnxruntime-genai", "builder_precision": folder.precision,
            "onnxruntime_genai": folder.builder_version, "runs_on": runs_on})
        notes["generate"] = f"prunec generate {output} --prompt TEXT [--chat]; prunec bench {output}"
        manifest = build_manifest(loaded, job, preset, artifact, pruned.outcome, tmp, checks, latency, steps, notes,
                                  artifact_info=info)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (tmp / REPORT).write_text(markdown(manifest))
    return manifest
