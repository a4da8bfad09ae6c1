"""Time a compiled decoder folder as a device would use it: prefill a prompt, then decode token by token.

Figures (median over ``repeat`` runs after one untimed warm-up): time to first token (prefill of
``prefill`` tokens plus picking the first new one), prefill tokens/s (``prefill`` / that time),
decode tokens/s (the ``decode - 1`` tokens after the first, each one step with the KV cache) and
the process's peak resident memory while loading and running the model. Greedy, with the
end-of-sequence token held back (``min_length``) so every run decodes exactly ``decode`` tokens.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from prunec.errors import ConfigError
from prunec.generate import Decoder, open_decoder, runtime


def _rss_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS, so the peak measures this bench alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    peak = _rss_mb("VmHWM")
    if peak is not None:
        return peak
    import resource  # POSIX only; /proc answered above on Linux

    per_mib = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_mib


def _one_run(decoder: Decoder, prompt: list[int], decode: int) -> tuple[float, float]:
    og = runtime()
    params = og.GeneratorParams(decoder.model)
    length = len(prompt) + decode
    params.set_search_options(do_sample=False, max_length=length, min_length=length)
    generator = og.Generator(decoder.model, params)
    start = time.perf_counter()
    generator.append_tokens(prompt)
    generator.generate_next_token()
    generator.get_next_tokens()
    first = time.perf_counter()
    while not generator.is_done():
        generator.generate_next_token()
        generator.get_next_tokens()
    return first - start, time.perf_counter() - first


def bench_decoder(directory: Path, *, prefill: int = 128, decode: int = 128, repeat: int = 3,
                  threads: int | None = None, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time-to-first-token, prefill and decode tokens/s, peak RSS of the decoder folder ``directory``
    (``manifest``: see :func:`prunec.generate.open_decoder`)."""
    if prefill < 1 or decode < 2 or repeat < 1:
        raise ConfigError("--prefill must be >= 1, --decode >= 2 and --repeat >= 1")
    before = _rss_mb("VmRSS")
    reset = _reset_peak_rss()
    decoder = open_decoder(Path(directory), threads, manifest)
    if prefill + decode > decoder.max_context:
        raise ConfigError(f"--prefill {prefill} + --decode {decode} exceeds the model's context of "
                          f"{decoder.max_context} tokens; lower them")
    vocab = int(decoder.manifest["artifact"].get("vocab_size") or 1000)
    # Token ids drawn once from the vocabulary: the cost of a step does not depend on which tokens.
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, vocab, prefill)]
    _one_run(decoder, prompt, min(decode, 8))  # warm-up: first-run allocations and kernel choices
    ttft, decode_s = [], []
    for _ in range(repeat):
        first, rest = _one_run(decoder, prompt, decode)
        ttft.append(first)
        decode_s.append(rest)
    t, d = statistics.median(ttft), statistics.median(decode_s)
    peak = _peak_rss_mb()
    return {
        "time_to_first_token_ms": round(t * 1e3, 2),
        "prefill_tokens_per_s": round(prefill / t, 1),
        "decode_tokens_per_s": round((decode - 1) / d, 1),
        "peak_rss_mb": round(peak, 1),
        # Python, and torch when prunec's CLI loaded it, are in the process before the model is.
        "peak_rss_above_start_mb": round(peak - before, 1) if reset and before is not None else None,
        "prefill_tokens": prefill, "decode_tokens": decode, "repeat": repeat,
        "threads": decoder.manifest["threads"],
    }
