"""The GGUF half of ``prunec compile --backend gguf``: a pruned LLaMA-family model for llama.cpp.

The pruned program's tensors are written with :func:`prunec.targets.gguf_writer.write_gguf`
(per-layer widths as llama.cpp's ``deci`` architecture, the tokenizer carried over), then llama.cpp
itself (``llama-cpp-python``) loads the file and is compared with the pruned PyTorch graph: the logits
of the traced example, and greedy continuations of a few prompts with llama.cpp's KV cache (token
agreement, as for decoder folders). Prefill and decode are timed; ``prunec generate`` and ``prunec
bench`` run the folder with llama.cpp.

``--quantize`` maps to GGUF types: ``none`` F32, ``int8-weights`` Q8_0, ``int4-weights`` Q4_0.
Their blocks are 32 values along a row, and llama.cpp's fast paths want rows of multiples of 32, so
compile rounds kept widths to a multiple of 32 (:data:`GGUF_WIDTH_MULTIPLE`).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from prunec.compile import FLOAT_TOLERANCE, MANIFEST, REPORT, CompileJob, PrunedProgram, _timed, build_manifest, \
    markdown, resolve_target
from prunec.errors import ConfigError, ToolchainError, VerificationError
from prunec.models import LoadedModel
from prunec.output import atomic_output_dir
from prunec.targets import llamacpp_runtime
from prunec.targets.backend import Artifact, TensorSpec
from prunec.targets.gguf_writer import FAMILIES, write_gguf

GGUF_KIND = "gguf"
GGUF_FILE = "model.gguf"
GGUF_WIDTH_MULTIPLE = 32
# --quantize -> GGUF tensor type; and the agreement each must reach (as for decoder folders:
# quantised files are held to teacher-forced agreement, float ones to free-running greedy).
GGUF_TYPES = {"none": "f32", "int8-weights": "q8_0", "int4-weights": "q4_0"}
MIN_AGREEMENT = {"none": ("greedy", 0.9), "int8-weights": ("teacher_forced", 0.75),
                 "int4-weights": ("teacher_forced", 0.5)}
PROMPTS = ("The capital of France is", "Once upon a time, there was a", "def fibonacci(n):")
NEW_TOKENS = 16


def check_gguf_job(loaded: LoadedModel, job: CompileJob) -> None:
    """Refuse, before pruning, what a GGUF compile cannot do (family, quantisation, llama.cpp)."""
    model_type = getattr(getattr(loaded.model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ConfigError(f"--backend gguf writes {', '.join(sorted(FAMILIES))} models for llama.cpp, not "
                          f"'{model_type or type(loaded.model).__name__}'; use --backend onnx")
    if job.quantize not in GGUF_TYPES:
        raise ConfigError(f"--backend gguf takes --quantize {', '.join(GGUF_TYPES)} (F32, Q8_0, Q4_0), "
                          f"not '{job.quantize}'")
    reason = llamacpp_runtime.missing()
    if reason:
        raise ToolchainError(f"--backend gguf verifies the file in llama.cpp: {reason}")


def _tokenizer_source(loaded: LoadedModel) -> dict[str, Path]:
    source = Path(loaded.source) if loaded.source else None
    if source is not None and source.suffix == ".gguf" and source.is_file():
        return {"tokenizer_gguf": source}
    if source is not None and source.is_dir() and (source / "tokenizer.json").is_file():
        return {"tokenizer_dir": source}
    return {}


def _prompt_ids(loaded: LoadedModel, vocab: int) -> list[list[int]]:
    if loaded.tokenizer is not None:
        return [list(loaded.tokenizer(p).input_ids) for p in PROMPTS]
    rng = np.random.default_rng(0)  # no tokenizer (a model built from a config): random ids
    return [rng.integers(0, vocab, 6).tolist() for _ in PROMPTS]


def _torch_logits(module: torch.nn.Module, ids: Sequence[int]) -> np.ndarray:
    from prunec.evaluate import logits_of

    with torch.no_grad():
        return logits_of(module(torch.tensor([list(ids)])))[0].float().numpy()


def verify_gguf(module: torch.nn.Module, llm: Any, prompts: list[list[int]], quantize: str,
                example: Sequence[int], min_agreement: float | None = None,
                decode: Callable[[Sequence[int]], str] = lambda ids: " ".join(map(str, ids))) -> dict[str, Any]:
    """Logits of the example and greedy/teacher-forced agreement of llama.cpp with the pruned graph."""
    reference = _torch_logits(module, example)
    got = llamacpp_runtime.sequence_logits(llm, example)
    diff = float(np.abs(got.astype(np.float64) - reference).max())
    scale = max(1.0, float(np.abs(reference).max()))
    greedy = forced = total = 0
    continuations = []
    for ids in prompts:
        seq = list(ids)
        for _ in range(NEW_TOKENS):  # PyTorch's greedy continuation (the graph has no KV cache: re-run)
            seq.append(int(_torch_logits(module, seq)[-1].argmax()))
        want = seq[len(ids):]
        have = list(llamacpp_runtime.greedy(llm, ids, NEW_TOKENS))
        forced_logits = llamacpp_runtime.sequence_logits(llm, seq[:-1])[len(ids) - 1:]
        forced += int((forced_logits.argmax(-1) == np.array(want)).sum())
        greedy += sum(a == b for a, b in zip(want, have))
        total += NEW_TOKENS
        continuations.append({"prompt": decode(ids), "pytorch": decode(want), "artefact": decode(have),
                              "agreement": sum(a == b for a, b in zip(want, have)) / NEW_TOKENS})
    which, default = MIN_AGREEMENT[quantize]
    limit = default if min_agreement is None else min_agreement
    checks = {"metric": f"{which}_agreement", "tolerance": limit, "greedy_agreement": greedy / total,
              "teacher_forced_agreement": forced / total, "new_tokens": NEW_TOKENS,
              "prompts": continuations,
              "example_logits_max_abs_diff": diff, "example_logits_scale": scale}
    if checks[f"{which}_agreement"] < limit:
        raise VerificationError(f"llama.cpp's {which} token agreement with the pruned PyTorch model is "
                                f"{checks[f'{which}_agreement']:.2f} < {limit:.2f}; nothing written")
    if quantize == "none" and not diff <= FLOAT_TOLERANCE * scale:
        raise VerificationError(f"llama.cpp's logits differ from PyTorch by {diff:.3g} (> {FLOAT_TOLERANCE * scale:.3g}); "
                                f"nothing written")
    return checks


def bench_gguf(path: Path, *, prefill: int = 128, decode: int = 128, repeat: int = 3, threads: int = 2) -> dict[str, Any]:
    """Time to first token, prefill and decode tokens/s (median of ``repeat``), peak RSS, with llama.cpp."""
    from prunec.genai_bench import _peak_rss_mb, _reset_peak_rss, _rss_mb

    if prefill < 1 or decode < 2 or repeat < 1:
        raise ConfigError("--prefill >= 1, --decode >= 2 and --repeat >= 1 are needed")
    before = _rss_mb("VmRSS") if _reset_peak_rss() else None
    llm = llamacpp_runtime.load(path, n_ctx=prefill + decode, threads=threads)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, llm.n_vocab(), prefill).tolist()
    first, per_token = [], []
    for _ in range(repeat + 1):  # the first run warms up and is not counted
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(decode - 1):
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        first.append(ttft)
        per_token.append((time.perf_counter() - start) / (decode - 1))
    first, per_token = first[1:], per_token[1:]
    peak = _peak_rss_mb()
    ttft = statistics.median(first)
    return {"runtime": "llama.cpp (llama-cpp-python)", "threads": threads, "repeat": repeat, "prefill_tokens": prefill,
            "decode_tokens": decode, "time_to_first_token_ms": round(ttft * 1e3, 2),
            "prefill_tokens_per_s": round(prefill / ttft, 2),
            "decode_tokens_per_s": round(1 / statistics.median(per_token), 2), "peak_rss_mb": round(peak, 1),
            "peak_rss_above_start_mb": round(peak - before, 1) if before is not None else None}


def lower_and_verify_gguf(loaded: LoadedModel, pruned: PrunedProgram, job: CompileJob, output: Path, *,
                          overwrite: bool = False, on_stage: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write → load in llama.cpp → verify → time → manifest and report, atomically into ``output``."""
    steps, notes = dict(pruned.steps), dict(pruned.notes)
    preset, _ = _timed(steps, on_stage, "resolve target", lambda: resolve_target(job))
    module, config = pruned.outcome.result.module, loaded.model.config
    gguf_type = GGUF_TYPES[job.quantize]
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        summary = _timed(steps, on_stage, "write GGUF", lambda: write_gguf(
            module.state_dict(), config, tmp / GGUF_FILE, gguf_type=gguf_type, name=loaded.name,
            **_tokenizer_source(loaded)))
        n_ctx = int(min(config.max_position_embeddings, 512))
        llm = _timed(steps, on_stage, "load in llama.cpp",
                     lambda: llamacpp_runtime.load(tmp / GGUF_FILE, n_ctx=n_ctx, threads=job.threads or 2,
                                                   logits_all=True, f32_cache=gguf_type == "f32"))
        vocab = int(module.state_dict()["model.embed_tokens.weight"].shape[0])
        example = [int(t) for t in pruned.outcome.args[0][0].tolist()]
        decode = (lambda ids: loaded.tokenizer.decode(list(ids))) if loaded.tokenizer is not None else \
            (lambda ids: " ".join(map(str, ids)))
        checks = _timed(steps, on_stage, "verify (logits, greedy continuations)",
                        lambda: verify_gguf(module, llm, _prompt_ids(loaded, vocab), job.quantize, example,
                                            job.min_agreement, decode))
        del llm
        latency = None
        if job.latency_repeat:
            prefill = min(128, n_ctx // 2)
            latency = _timed(steps, on_stage, "measure latency", lambda: bench_gguf(
                tmp / GGUF_FILE, prefill=prefill, decode=min(32, n_ctx - prefill), repeat=min(job.latency_repeat, 3),
                threads=job.threads or 2))
            latency["where"] = "llama.cpp on this host"
        if summary.fallback:
            notes["gguf_fallback"] = (f"{len(summary.fallback)} tensors kept in F16 (rows not a multiple of 32): "
                                      f"{', '.join(summary.fallback[:4])}; compile with --round-widths")
        notes["generate"] = f"prunec generate {output} --prompt TEXT [--chat]; prunec bench {output}"
        info = {"kind": GGUF_KIND, "max_context": int(config.max_position_embeddings), "arch": summary.arch,
                "gguf_type": gguf_type, "hidden": summary.hidden, "head_dim": summary.head_dim,
                "layer_widths": [w.__dict__ for w in summary.layers], "tokenizer": bool(_tokenizer_source(loaded))}
        artifact = Artifact(files=[GGUF_FILE], inputs=[TensorSpec("input_ids", (1, -1), "int64")],
                            outputs=[TensorSpec("logits", (1, -1, vocab), "float32")],
                            details={"runtime": "llama.cpp", "runs_on": "llama.cpp (any build of it) on the device"})
        manifest = build_manifest(loaded, job, preset, artifact, pruned.outcome, tmp, checks, latency, steps, notes,
                                  artifact_info=info)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (tmp / REPORT).write_text(markdown(manifest))
    return manifest


def generate_gguf(directory: Path, prompt: str, *, chat: bool = False, max_new_tokens: int = 128,
                  system: str | None = None, threads: int = 2) -> Iterator[str]:
    """Stream llama.cpp's greedy continuation of ``prompt`` (with the file's chat template for ``chat``)."""
    llm = llamacpp_runtime.load(Path(directory) / GGUF_FILE, n_ctx=2048, threads=threads)
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        for chunk in llm.create_chat_completion(messages, stream=True, temperature=0.0, top_k=1,
                                                max_tokens=max_new_tokens):
            yield chunk["choices"][0]["delta"].get("content", "") or ""
        return
    for chunk in llm(prompt, stream=True, temperature=0.0, top_k=1, max_tokens=max_new_tokens):
        yield chunk["choices"][0]["text"]
