"""`prunec run`: execute a compiled directory on inputs from an .npz file, write the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import typer

from prunec.cli.common import app, clean_errors, out
from prunec.compile import load_runner
from prunec.errors import ConfigError, OutputExistsError
from prunec.output import atomic_output_file


def read_inputs(path: Path, specs: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Arrays for the manifest's inputs, named after them or positional (``arr_0``, ``arr_1``...).

    Shapes must match the compiled (static) shapes; dtypes are converted within their kind
    (float64 -> float32, int32 -> int64), never across (float -> int).
    """
    if not path.is_file():
        raise ConfigError(f"input file {path} not found")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise ConfigError(f"cannot read {path} as .npz: {exc}") from None
    names = [s["name"] for s in specs]
    positional = [f"arr_{i}" for i in range(len(specs))]
    keys = sorted(data.files)
    if keys == sorted(names):
        chosen = names
    elif keys == sorted(positional):
        chosen = positional
    else:
        raise ConfigError(f"{path} holds arrays {keys}; the artefact needs {names} "
                          f"(or positional {positional}): save them with np.savez(file, {names[0]}=...)")
    arrays = []
    for key, spec in zip(chosen, specs):
        array = data[key]
        want = np.dtype(spec["dtype"])
        if tuple(array.shape) != tuple(spec["shape"]):
            raise ConfigError(f"input {spec['name']} has shape {list(array.shape)}; the artefact was compiled for "
                              f"{list(spec['shape'])} (recompile with matching example inputs)")
        if array.dtype != want:
            if _family(array.dtype) != _family(want):
                raise ConfigError(f"input {spec['name']} is {array.dtype}; the artefact needs {want.name}")
            array = array.astype(want)
        arrays.append(array)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray], force: bool) -> None:
    """Write atomically (:func:`prunec.output.atomic_output_file`)."""
    if path.exists() and not force:
        raise OutputExistsError(f"output {path} already exists; choose another --output or pass --force")
    with atomic_output_file(path, overwrite=True) as tmp:
        np.savez(tmp, **arrays)


def _family(dtype: np.dtype) -> str:
    """float, integer or bool: conversions stay within one family."""
    return {"f": "float", "i": "integer", "u": "integer", "b": "bool"}.get(dtype.kind, dtype.kind)


@app.command("run")
@clean_errors
def run_cmd(
    compiled: Path = typer.Argument(..., help="A directory written by prunec compile."),
    inputs: Path = typer.Option(..., help=".npz with one array per input (named after the inputs, or arr_0, arr_1...)."),
    output: Path = typer.Option(..., help=".npz to write the outputs to (named after the artefact's outputs)."),
    threads: int = typer.Option(0, help="Threads (0: the manifest's setting)."),
    force: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
) -> None:
    """Run a compiled artefact with its backend's runner (natively, or under the target's emulator)."""
    manifest, runner = load_runner(compiled, threads or None)
    arrays = read_inputs(inputs, manifest["inputs"])
    results = runner(arrays)
    names = [s["name"] for s in manifest["outputs"]]
    if len(results) != len(names):
        raise ConfigError(f"the artefact returned {len(results)} outputs, its manifest lists {len(names)}; recompile")
    write_npz(output, dict(zip(names, results)), force)
    out.print(f"wrote {output}: " + ", ".join(f"{n} {list(r.shape)} {r.dtype}" for n, r in zip(names, results)))
