"""Generate text from a compiled decoder folder (``prunec compile`` of a causal LM) with ONNX Runtime GenAI.

::

    from prunec.generate import generate
    for piece in generate("smol-genai", "What is the capital of France?", chat=True):
        print(piece, end="", flush=True)

Everything here is stock ``onnxruntime_genai`` (``Model``, ``Tokenizer``, ``Generator``); this
module only opens a folder that ``prunec compile`` wrote, with the thread count it recorded, and
applies the model's chat template. No torch is needed to run it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from prunec.errors import ConfigError, ToolchainError

GENAI_KIND = "onnxruntime-genai"
MANIFEST = "manifest.json"


@dataclass
class Decoder:
    """An opened decoder folder: the ORT GenAI model and tokenizer, and the folder's manifest."""

    model: Any
    tokenizer: Any
    manifest: dict[str, Any]
    directory: Path

    @property
    def max_context(self) -> int:
        return int(self.manifest["artifact"]["max_context"])

    @property
    def chat_template(self) -> bool:
        return bool(self.manifest["artifact"].get("chat_template"))


def runtime() -> Any:
    """The ``onnxruntime_genai`` module (:class:`ToolchainError` naming the install when it is missing)."""
    try:
        import onnxruntime_genai
    except ImportError:
        raise ToolchainError("running a decoder folder needs onnxruntime-genai: pip install 'prunec[onnx]'") from None
    return onnxruntime_genai


def decoder_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a decoder folder; :class:`ConfigError` naming the fix for anything else."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir() or not path.is_file():
        raise ConfigError(f"{directory} has no {MANIFEST}; pass a directory written by prunec compile")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); recompile with prunec compile") from None
    kind = manifest.get("artifact", {}).get("kind", "graph")
    if kind != GENAI_KIND:
        raise ConfigError(f"{directory} holds a {kind} artefact, not a text decoder; compile a causal LM with "
                          f"--backend onnx (--artifact genai) to generate text")
    return manifest


def open_decoder(directory: Path, threads: int | None = None, manifest: dict[str, Any] | None = None) -> Decoder:
    """Load a decoder folder; ``threads`` overrides the manifest's (0: ONNX Runtime's default).

    ``manifest`` stands in for ``manifest.json`` while ``prunec compile`` is still writing the folder.
    """
    og = runtime()
    directory = Path(directory)
    manifest = decoder_manifest(directory) if manifest is None else manifest
    threads = int(manifest.get("threads", 0)) if threads is None else threads
    missing = [n for n in ("genai_config.json", "model.onnx") if not (directory / n).is_file()]
    if missing:
        raise ConfigError(f"{directory} lacks {', '.join(missing)}; recompile it with prunec compile")
    try:
        config = og.Config(str(directory))
        if threads:
            options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        model = og.Model(config)
        tokenizer = og.Tokenizer(model)
    except Exception as exc:  # noqa: BLE001 - a damaged folder becomes one line
        raise ToolchainError(f"onnxruntime-genai cannot load {directory}: {str(exc).strip().splitlines()[0][:300]}; "
                             f"recompile with prunec compile") from exc
    return Decoder(model, tokenizer, {**manifest, "threads": threads}, directory)


def prompt_tokens(decoder: Decoder, prompt: str, chat: bool = False, system: str | None = None) -> list[int]:
    """Token ids of ``prompt``; with ``chat``, wrapped by the model's chat template as a user turn."""
    if chat:
        if not decoder.chat_template:
            raise ConfigError(f"{decoder.directory}'s tokenizer has no chat template; drop --chat")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        prompt = decoder.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    return [int(t) for t in decoder.tokenizer.encode(prompt)]


def _generator(decoder: Decoder, length: int, min_length: int = 0) -> Any:
    og = runtime()
    if length > decoder.max_context:
        raise ConfigError(f"{length} tokens do not fit the model's context of {decoder.max_context}; "
                          f"use a shorter prompt or fewer new tokens")
    params = og.GeneratorParams(decoder.model)
    # Greedy; max_length caps the KV cache ORT GenAI allocates (the context length by default).
    params.set_search_options(do_sample=False, max_length=length, min_length=min_length)
    return og.Generator(decoder.model, params)


def greedy_tokens(decoder: Decoder, ids: Sequence[int], max_new_tokens: int) -> Iterator[int]:
    """Greedy continuation of ``ids``: new token ids, until an end-of-sequence token or the limit."""
    if not ids:
        raise ConfigError("the prompt is empty; pass some text with --prompt")
    generator = _generator(decoder, len(ids) + max_new_tokens)
    generator.append_tokens(list(ids))
    while not generator.is_done():
        generator.generate_next_token()
        yield int(generator.get_next_tokens()[0])


def next_token_logits(decoder: Decoder, ids: Sequence[int], continuation: Sequence[int]) -> list[np.ndarray]:
    """Logits for the token after ``ids``, then after each prefix of ``continuation`` (teacher forcing)."""
    generator = _generator(decoder, len(ids) + len(continuation) + 1)
    generator.append_tokens(list(ids))
    logits = [np.array(generator.get_logits()).reshape(-1)]
    for token in continuation:
        generator.append_tokens([int(token)])
        logits.append(np.array(generator.get_logits()).reshape(-1))
    return logits


def generate(directory: Path | Decoder, prompt: str, *, chat: bool = False, max_new_tokens: int = 128,
             system: str | None = None, threads: int | None = None) -> Iterator[str]:
    """Stream the greedy continuation of ``prompt`` as text pieces (decoded incrementally)."""
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    decoder = directory if isinstance(directory, Decoder) else open_decoder(Path(directory), threads)
    ids = prompt_tokens(decoder, prompt, chat, system)
    stream = decoder.tokenizer.create_stream()
    for token in greedy_tokens(decoder, ids, max_new_tokens):
        piece = stream.decode(token)
        if piece:
            yield piece
