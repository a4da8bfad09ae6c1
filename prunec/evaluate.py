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

from prunec.calibration import jsonl_records, token_windows
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
def sentence_embeddings(model: Callable[..., Any], tokenizer: Any, sentences: list[str],
                        fixed_len: int | None = None) -> torch.Tensor:
    """Mean-pooled last hidden states (the sentence-transformers recipe), one sentence at a time.

    ``fixed_len``: pad or truncate every sentence to this many tokens (an exported ``.pt2`` program
    has the static sequence length it was traced with); the mean then covers the real tokens only.
    """
    out = []
    for s in sentences:
        if fixed_len:
            enc = tokenizer(s, return_tensors="pt", padding="max_length", truncation=True, max_length=fixed_len)
        else:
            enc = tokenizer(s, return_tensors="pt")
        result = model(enc.input_ids)
        hidden = result.last_hidden_state if hasattr(result, "last_hidden_state") else result[0]
        real = getattr(enc, "attention_mask", None)  # tokenizers without one: every position is real
        mask = (real[0] if real is not None else torch.ones(hidden.shape[1])).to(hidden.dtype)[:, None]
        out.append((hidden[0] * mask).sum(0) / mask.sum().clamp_min(1))
    return torch.stack(out)


def mean_embedding_cosine(base: Callable[..., Any], pruned: Callable[..., Any], tokenizer: Any, sentences: list[str],
                          fixed_len: int | None = None) -> float:
    """Mean cosine similarity between the two models' sentence embeddings (see :func:`sentence_embeddings`)."""
    if not sentences:
        raise ConfigError("no sentences to embed")
    a = sentence_embeddings(base, tokenizer, sentences, fixed_len)
    b = sentence_embeddings(pruned, tokenizer, sentences, fixed_len)
    return float(F.cosine_similarity(a, b, dim=1).mean())


def read_labelled(path: str | Path, tokenizer: Any = None, fixed_len: int | None = None) -> tuple[list[tuple], torch.Tensor]:
    """Labelled evaluation data: a list of one-sample input tuples and the integer labels.

    ``.jsonl``: one ``{"text": ..., "label": INT}`` per line, tokenised with ``tokenizer``
    (padded/truncated to ``fixed_len`` tokens when the model has a static shape).
    ``.npz``: an array ``labels`` (N,) and the model's inputs as the other arrays
    (first dimension N, positional order by name: ``arr_0``, ``arr_1``, ... first).
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        raise ConfigError(f"evaluation data {path} is missing or empty")
    if path.suffix == ".npz":
        import numpy as np

        data = np.load(path)
        if "labels" not in data.files:
            raise ConfigError(f"{path} has no 'labels' array; an accuracy .npz holds 'labels' (N,) and the inputs")
        labels = torch.from_numpy(data["labels"]).long().reshape(-1)
        keys = sorted((k for k in data.files if k != "labels"), key=lambda k: (not k.startswith("arr_"), k))
        arrays = [torch.from_numpy(data[k]) for k in keys]
        if not arrays or any(a.shape[0] != labels.numel() for a in arrays):
            raise ConfigError(f"{path}: every input array needs one row per label ({labels.numel()} labels)")
        return [tuple(a[i : i + 1] for a in arrays) for i in range(labels.numel())], labels
    if path.suffix != ".jsonl":
        raise ConfigError(f"accuracy data {path} must be .jsonl ({{\"text\": ..., \"label\": INT}} per line) or .npz")
    if tokenizer is None:
        raise ConfigError(f"{path} holds text but neither model has a tokenizer; give an .npz of inputs and labels")
    samples, labels = [], []
    for i, record in jsonl_records(path):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or \
                not isinstance(record.get("label"), int) or isinstance(record.get("label"), bool):
            raise ConfigError(f"{path}:{i} needs a string 'text' and an integer 'label', e.g. "
                              "{\"text\": \"great film\", \"label\": 1}")
        if fixed_len:
            ids = tokenizer(record["text"], padding="max_length", truncation=True, max_length=fixed_len,
                            return_tensors="pt").input_ids
        else:
            ids = tokenizer(record["text"], return_tensors="pt").input_ids
        samples.append((ids,))
        labels.append(record["label"])
    if not samples:
        raise ConfigError(f"{path} holds no samples")
    return samples, torch.tensor(labels)


@torch.no_grad()
def accuracy(model: Callable[..., Any], samples: list[tuple], labels: torch.Tensor, batch_size: int = 1) -> float:
    """Share of samples whose arg-max logit is the label.  With ``batch_size`` > 1 (a program with a
    static batch), samples are stacked and the last batch is padded by repeating its last sample."""
    correct = 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        real = len(chunk)
        chunk = chunk + [chunk[-1]] * (batch_size - real)
        inputs = tuple(torch.cat(parts) for parts in zip(*chunk))
        logits = logits_of(model(*inputs))
        if logits.dim() != 2:
            raise ConfigError(f"accuracy needs a classifier whose logits are (batch, classes); got shape "
                              f"{tuple(logits.shape)}")
        correct += int((logits[:real].argmax(-1) == labels[start : start + real]).sum())
    return correct / len(samples)
