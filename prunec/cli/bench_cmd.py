"""`prunec bench`: time a compiled artefact (median of repeated runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import typer

from prunec.cli.common import app, clean_errors, out
from prunec.cli.run_cmd import read_inputs
from prunec.compile import GRAPH_KIND, load_manifest, load_runner, measure_latency
from prunec.generate import GENAI_KIND


def synthetic_inputs(specs: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Random floats and zero integers (zeros are valid token ids and masks) of the compiled shapes."""
    rng = np.random.default_rng(0)
    arrays = []
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        arrays.append(rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype))
    return arrays


def _bench_decoder(compiled: Path, prefill: int, decode: int, repeat: int, threads: int, json_out: bool) -> None:
    from prunec.genai_bench import bench_decoder

    figures = bench_decoder(compiled, prefill=prefill, decode=decode, repeat=repeat, threads=threads or None)
    if json_out:
        print(json.dumps(figures, indent=2))
        return
    above = figures["peak_rss_above_start_mb"]
    out.print(f"{compiled} (onnxruntime-genai, {figures['threads']} threads, median of {figures['repeat']}): "
              f"time to first token {figures['time_to_first_token_ms']} ms ({prefill}-token prompt), prefill "
              f"{figures['prefill_tokens_per_s']} tokens/s, decode {figures['decode_tokens_per_s']} tokens/s "
              f"({decode} tokens), peak RSS {figures['peak_rss_mb']} MiB"
              + (f" ({above} MiB above the process before loading)" if above is not None else ""))


def _bench_gguf(compiled: Path, prefill: int, decode: int, repeat: int, threads: int, json_out: bool) -> None:
    from prunec.compile_gguf import GGUF_FILE, bench_gguf

    figures = bench_gguf(compiled / GGUF_FILE, prefill=prefill, decode=decode, repeat=repeat, threads=threads or 2)
    if json_out:
        print(json.dumps(figures, indent=2))
        return
    out.print(f"{compiled} (llama.cpp, {figures['threads']} threads, median of {figures['repeat']}): time to first "
              f"token {figures['time_to_first_token_ms']} ms ({prefill}-token prompt), prefill "
              f"{figures['prefill_tokens_per_s']} tokens/s, decode {figures['decode_tokens_per_s']} tokens/s "
              f"({decode} tokens), peak RSS {figures['peak_rss_mb']} MiB")


@app.command("bench")
@clean_errors
def bench_cmd(
    compiled: Path = typer.Argument(..., help="A directory written by prunec compile."),
    repeat: Optional[int] = typer.Option(None, help="Timed runs, the median is reported (default 50; decoder folders 3)."),
    warmup: int = typer.Option(5, help="Untimed runs first."),
    threads: int = typer.Option(0, help="Threads (0: the manifest's setting)."),
    inputs: Optional[Path] = typer.Option(None, help=".npz inputs (default: synthetic inputs of the compiled shapes)."),
    prefill: int = typer.Option(128, help="Decoder folders: prompt tokens to prefill."),
    decode: int = typer.Option(128, help="Decoder folders: new tokens to decode."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Time the artefact in COMPILED. A graph: median, min and max of --repeat runs. A text decoder:
    time to first token, prefill and decode tokens/s, peak RSS (median of --repeat runs, default 3)."""
    kind = load_manifest(compiled).get("artifact", {}).get("kind", GRAPH_KIND)
    if kind == "gguf":
        _bench_gguf(compiled, prefill, decode, 3 if repeat is None else repeat, threads, json_out)
        return
    if kind == GENAI_KIND:
        _bench_decoder(compiled, prefill, decode, 3 if repeat is None else repeat, threads, json_out)
        return
    manifest, runner = load_runner(compiled, threads or None)
    arrays = read_inputs(inputs, manifest["inputs"]) if inputs else synthetic_inputs(manifest["inputs"])
    figures = measure_latency(runner, arrays, max(50 if repeat is None else repeat, 1), warmup=warmup)
    figures.update(threads=manifest["threads"], backend=manifest["backend"], target=manifest["target"],
                   where=manifest.get("backend_details", {}).get("runs_on", "this host"))
    if json_out:
        print(json.dumps(figures, indent=2))
        return
    out.print(f"{compiled} ({figures['backend']} for {figures['target']}, {figures['threads']} threads): "
              f"median {figures['median_ms']} ms, min {figures['min_ms']} ms, max {figures['max_ms']} ms "
              f"over {figures['repeat']} runs; {figures['where']}")
