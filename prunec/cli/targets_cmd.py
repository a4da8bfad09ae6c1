"""`prunec targets`: list the device target presets, or show one."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

import typer
from rich.table import Table

from prunec.cli.common import app, clean_errors, out
from prunec.targets.backend import backend_names, get_backend
from prunec.targets.preset import list_presets, load_preset


@app.command("targets")
@clean_errors
def targets_cmd(
    show: Optional[str] = typer.Option(None, help="Show one preset (a name or a .toml file) in full."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the target presets (add your own: copy one with --show NAME into a .toml file and pass its path)."""
    presets = [load_preset(show)] if show else list_presets()
    backends = {name: get_backend(name) for name in backend_names()}
    rows = []
    for preset in presets:
        row = asdict(preset)
        row["llvm_features"] = list(preset.llvm_features)
        row["is_host"] = preset.is_host
        row["tvm_target"] = preset.tvm_target()
        row["backends"] = {name: backend.missing(preset) or "ready" for name, backend in backends.items()}
        rows.append(row)
    if json_out:
        print(json.dumps(rows[0] if show else rows, indent=2))
        return
    if show:
        for key, value in rows[0].items():
            out.print(f"[bold]{key}[/]: {value}", highlight=False)
        return
    table = Table(title="target presets")
    for col in ("name", "arch", "cpu", "ORT level", ".ort", "width multiple", "native binaries run", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        runs = "native" if row["is_host"] else (f"under {row['emulator']}" if row["emulator"] else "no")
        table.add_row(row["name"], row["arch"], row["llvm_cpu"], row["ort_optimization_level"],
                      "yes" if row["ort_format"] else "", str(row["width_multiple"]), runs, row["description"])
    out.print(table)
