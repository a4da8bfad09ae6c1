"""Run a GGUF file in llama.cpp itself (through the ``llama-cpp-python`` bindings).

What prunec needs from llama.cpp: the logits of a token sequence (to verify a written GGUF against
the PyTorch model it came from) and greedy decoding with its KV cache (to generate and to time
prefill and decode).  ``llama-cpp-python`` builds llama.cpp from source on install, so it is an
optional dependency: :func:`missing` says how to get it, and callers refuse cleanly without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from prunec.errors import ToolchainError

INSTALL_HINT = "pip install llama-cpp-python (builds llama.cpp from source; needs cmake and a C++ compiler)"


def missing() -> str | None:
    """Why llama.cpp cannot run here (None when it can)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama.cpp's Python bindings are not installed ({INSTALL_HINT})"
    return None


def load(path: Path, *, n_ctx: int = 512, threads: int = 2, logits_all: bool = False, f32_cache: bool = False) -> Any:
    """A ``llama_cpp.Llama`` for ``path`` (quiet; ``logits_all`` keeps every position's logits).

    ``f32_cache`` keeps the KV cache in float32 (llama.cpp's default is F16, which moves float32
    logits by ~1e-3): verification of a float32 file uses it, timing uses the default users get.
    """
    reason = missing()
    if reason:
        raise ToolchainError(reason)
    import llama_cpp

    try:
        cache = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if f32_cache else {}
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads or None,
                               n_threads_batch=threads or None, logits_all=logits_all, verbose=False, **cache)
    except (ValueError, RuntimeError) as exc:
        raise ToolchainError(f"llama.cpp cannot load {path}: {exc}") from None


def sequence_logits(llm: Any, ids: Sequence[int]) -> np.ndarray:
    """Logits of every position of ``ids`` (one prefill), shape ``(len(ids), vocab)``."""
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def greedy(llm: Any, prompt: Sequence[int], max_new_tokens: int, stop: Sequence[int] = ()) -> Iterator[int]:
    """Greedy continuation of ``prompt`` with llama.cpp's KV cache: one prefill, then one token per step."""
    llm.reset()
    llm.eval(list(prompt))
    for _ in range(max_new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        yield token
        if token in stop:
            return
        llm.eval([token])
