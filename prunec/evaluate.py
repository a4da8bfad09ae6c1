"""Evaluation metrics: language-model perplexity and embedding similarity.

Perplexity follows the protocol of this project's benchmarks: tokenise the text
once, cut it into non-overlapping windows of ``window`` tokens, take the first
``n_windows``, and report exp(mean next-token NLL) over all predicted tokens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from prunec.calibration import token_windows
from prunec.errors import ConfigError


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output: a tensor, an object with ``.logits``, or a tuple led by them."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    if logits is None:
        raise ConfigError("this needs a model that returns logits (a language model)")
    return logits


def tokenize_file(path: str | Path, tokenizer: Any) -> torch.Tensor:
    text = Path(path).read_text(encoding="utf-8")
    if not text.strip():
        raise ConfigError(f"evaluation file {path} is empty")
    return tokenizer(text, return_tensors="pt").input_ids[0]


@torch.no_grad()
def perplexity(model: Callable[..., Any], ids: torch.Tensor, window: int = 512, n_windows: int = 24) -> float:
    """exp(mean next-token NLL) over the first ``n_windows`` windows of ``window`` tokens."""
    windows = token_windows(ids, window, n_windows)
    if not windows:
        raise ConfigError(f"evaluation data has {ids.numel()} tokens, fewer than one window of {window}")
    nll, count = 0.0, 0
    for w in windows:
        logits = logits_of(model(w[None])).float()
        nll += F.cross_entropy(logits[0, :-1], w[1:], reduction="sum").item()
        count += w.numel() - 1
    return math.exp(nll / count)


@torch.no_grad()
def sentence_embeddings(model: Callable[..., Any], tokenizer: Any, sentences: list[str]) -> torch.Tensor:
    """Mean-pooled last hidden states (the sentence-transformers recipe), one sentence at a time."""
    out = []
    for s in sentences:
        enc = tokenizer(s, return_tensors="pt")
        result = model(enc.input_ids)
        hidden = result.last_hidden_state if hasattr(result, "last_hidden_state") else result[0]
        out.append(hidden[0].mean(0))
    return torch.stack(out)


def mean_embedding_cosine(base: Callable[..., Any], pruned: Callable[..., Any], tokenizer: Any, sentences: list[str]) -> float:
    """Mean cosine similarity between the two models' sentence embeddings."""
    if not sentences:
        raise ConfigError("no sentences to embed")
    a = sentence_embeddings(base, tokenizer, sentences)
    b = sentence_embeddings(pruned, tokenizer, sentences)
    return float(F.cosine_similarity(a, b, dim=1).mean())
