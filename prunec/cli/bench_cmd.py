"""`prunec bench`: time a compiled artefact (median of repeated runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import typer

from prunec.cli.common import app, clean_errors, out
from prunec.cli.run_cmd import read_inputs
from prunec.compile import load_runner, measure_latency


def synthetic_inputs(specs: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Random floats and zero integers (zeros are valid token ids and masks) of the compiled shapes."""
    rng = np.random.default_rng(0)
    arrays = []
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        arrays.append(rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype))
    return arrays


@app.command("bench")
@clean_errors
def bench_cmd(
    compiled: Path = typer.Argument(..., help="A directory written by prunec compile."),
    repeat: int = typer.Option(50, help="Timed runs (the median is reported)."),
    warmup: int = typer.Option(5, help="Untimed runs first."),
    threads: int = typer.Option(0, help="Threads (0: the manifest's setting)."),
    inputs: Optional[Path] = typer.Option(None, help=".npz inputs (default: synthetic inputs of the compiled shapes)."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Time the artefact in COMPILED with its backend's runner: median, min and max of --repeat runs."""
    manifest, runner = load_runner(compiled, threads or None)
    arrays = read_inputs(inputs, manifest["inputs"]) if inputs else synthetic_inputs(manifest["inputs"])
    figures = measure_latency(runner, arrays, max(repeat, 1), warmup=warmup)
    figures.update(threads=manifest["threads"], backend=manifest["backend"], target=manifest["target"],
                   where=manifest.get("backend_details", {}).get("runs_on", "this host"))
    if json_out:
        print(json.dumps(figures, indent=2))
        return
    out.print(f"{compiled} ({figures['backend']} for {figures['target']}, {figures['threads']} threads): "
              f"median {figures['median_ms']} ms, min {figures['min_ms']} ms, max {figures['max_ms']} ms "
              f"over {figures['repeat']} runs; {figures['where']}")
