"""Greedy generation for the gate's task metrics, on any model ``prunec check`` loads.

A Hugging Face model (``generate``) decodes with its KV cache.  A traced program (``.pt2``) has
no cache: each new token re-runs the growing sequence, which is fine for short checks.  A program
traced with static shapes (``prunec prune --static-shapes``) gets its sequence right-padded to the
traced length and batch (causal attention: padding after the last real token leaves that token's
logits unchanged); prompts that cannot fit are refused before anything is generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from prunec.errors import ConfigError
from prunec.evaluate import logits_of
from prunec.shapes import is_symbolic


@dataclass(frozen=True)
class Generation:
    """The new tokens of one greedy continuation (stop token excluded) and their text."""

    ids: tuple[int, ...]
    text: str


def encode_prompt(tokenizer: Any, prompt: str, chat_template: bool = True) -> list[int]:
    """Token ids of ``prompt``: as a user turn of the tokenizer's chat template when it has one
    (and ``chat_template``), else the plain text."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        # The template already holds the special tokens it wants; don't add a second BOS.
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    return list(tokenizer(prompt).input_ids)


def stop_ids(tokenizer: Any, models: Iterable[Any] = ()) -> frozenset[int]:
    """End-of-sequence ids: the tokenizer's and those of each model's generation config (one set,
    so base and pruned stop on the same tokens)."""
    found: set[int] = set()
    sources = [getattr(tokenizer, "eos_token_id", None)]
    sources += [getattr(getattr(m, "generation_config", None), "eos_token_id", None) for m in models]
    for ids in sources:
        if isinstance(ids, int):
            found.add(ids)
        elif isinstance(ids, (list, tuple)):
            found.update(i for i in ids if isinstance(i, int))
    return frozenset(found)


def static_shape(model: Any) -> tuple[int | None, int | None]:
    """(batch, length) a traced program is pinned to; ``None`` where a dim is dynamic or the model
    is not a traced program."""
    graph = getattr(model, "graph", None)
    if graph is None:
        return None, None
    for node in graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.dim() == 2 and not val.dtype.is_floating_point:
            return tuple(None if is_symbolic(s) else int(s) for s in val.shape)  # type: ignore[return-value]
    return None, None


def check_fits(model: Any, name: str, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> None:
    """Refuse, before generating, prompts that a static-length program cannot continue."""
    _, length = static_shape(model)
    if length is None or not prompts:
        return
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens - 1 > length:
        raise ConfigError(f"{name} was traced with a static length of {length} tokens; the longest prompt "
                          f"({longest} tokens) plus --max-new-tokens {max_new_tokens} does not fit. Re-prune "
                          "without --static-shapes, or lower --max-new-tokens / shorten the prompts")


def _hf_generate(model: Any, prompt: list[int], max_new_tokens: int, stop: frozenset[int], pad: int) -> list[int]:
    from transformers import GenerationConfig

    ids = torch.tensor([prompt])
    # An explicit config: greedy, whatever sampling defaults the checkpoint ships with.
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=sorted(stop) or None, pad_token_id=pad)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[0, len(prompt):].tolist()


def _rerun_generate(model: Any, prompt: list[int], max_new_tokens: int, stop: frozenset[int], pad: int) -> list[int]:
    batch, length = static_shape(model)
    seq = list(prompt)
    for _ in range(max_new_tokens):
        row = seq + [pad] * ((length or len(seq)) - len(seq))
        x = torch.tensor([row] * (batch or 1))
        token = int(logits_of(model(x))[0, len(seq) - 1].argmax())
        seq.append(token)
        if token in stop:
            break
    return seq[len(prompt):]


@torch.no_grad()
def greedy_generate(model: Any, tokenizer: Any, prompt: list[int], max_new_tokens: int,
                    stop: frozenset[int]) -> Generation:
    """Greedy continuation of ``prompt`` (ids) for at most ``max_new_tokens`` tokens, ending at a stop id."""
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if isinstance(pad, int) else min(stop, default=0)
    run = _hf_generate if callable(getattr(model, "generate", None)) else _rerun_generate
    new = run(model, prompt, max_new_tokens, stop, pad)
    end = next((i for i, t in enumerate(new) if t in stop), len(new))  # up to the first stop id
    new = new[:end]
    return Generation(tuple(new), tokenizer.decode(new, skip_special_tokens=True).strip())
