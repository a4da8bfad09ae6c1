"""`prunec generate`: stream text from a compiled decoder folder (ONNX Runtime GenAI) or GGUF (llama.cpp)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from prunec.cli.common import app, clean_errors
from prunec.generate import generate


@app.command("generate")
@clean_errors
def generate_cmd(
    compiled: Path = typer.Argument(..., help="A decoder folder written by prunec compile (a causal LM)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The text to continue (or, with --chat, the user's turn)."),
    chat: bool = typer.Option(False, help="Wrap the prompt in the model's chat template as a user message."),
    system: Optional[str] = typer.Option(None, help="With --chat: a system message before the prompt."),
    max_new_tokens: int = typer.Option(128, help="Stop after this many new tokens (or at end of sequence)."),
    threads: Optional[int] = typer.Option(None, help="Threads (default: the manifest's; 0: ONNX Runtime's choice)."),
) -> None:
    """Generate greedily from COMPILED, printing tokens as they come."""
    from prunec.compile import load_manifest
    from prunec.compile_gguf import GGUF_KIND, generate_gguf

    kind = load_manifest(compiled).get("artifact", {}).get("kind") if (compiled / "manifest.json").is_file() else None
    if kind == GGUF_KIND:
        pieces = generate_gguf(compiled, prompt, chat=chat, system=system, max_new_tokens=max_new_tokens,
                               threads=threads or 2)
    else:
        pieces = generate(compiled, prompt, chat=chat, system=system, max_new_tokens=max_new_tokens, threads=threads)
    for piece in pieces:
        # Plain writes, flushed: each piece shows as it is decoded (Rich would buffer and style it).
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
