"""Scores of generated text: answer matching (qa), ROUGE-L (rouge, agreement), token agreement."""

from __future__ import annotations

import functools
import re
from typing import Any, Sequence

from prunec.errors import ConfigError


def normalise(text: str) -> str:
    """Case-folded, with every run of whitespace one space."""
    return " ".join(text.casefold().split())


def answer_found(reply: str, answers: Sequence[str]) -> bool:
    """Does ``reply`` contain one of ``answers`` (case-insensitive, whitespace-normalised)?

    The answer must stand as its own word(s): "4" is not found in "14", "Paris" is in "Paris."."""
    text = normalise(reply)
    return any(re.search(rf"(?<!\w){re.escape(normalise(a))}(?!\w)", text) for a in answers if a.strip())


@functools.lru_cache(maxsize=1)
def _scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ConfigError("ROUGE-L needs the rouge-score package: pip install 'prunec[eval]'") from None
    # Porter stemming, as in the summarisation literature; the scorer's own tokenizer keeps [a-z0-9] only.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of ``prediction`` against ``reference`` (Google's rouge-score)."""
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure)


def token_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of positions, up to the end of the longer sequence, where both hold the same token
    (1.0 for two empty continuations)."""
    positions = max(len(a), len(b))
    return sum(x == y for x, y in zip(a, b)) / positions if positions else 1.0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of ``a`` that ``b`` reproduces before the first differing token."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / len(a) if a else float(not b)
