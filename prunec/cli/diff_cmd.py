"""`prunec diff`: what changed between two graphs (IR dumps, .pt2 programs, prune outputs, models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prunec.cli.common import app, clean_errors, out, progress_bar
from prunec.errors import OutputExistsError
from prunec.output import atomic_output_file


@app.command("diff")
@clean_errors
def diff_cmd(
    a: str = typer.Argument(..., help="Before: an IR dump (.txt), a .pt2, a `prunec prune` output directory, or a MODEL."),
    b: str = typer.Argument(..., help="After: same forms as A."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained side-by-side HTML report here."),
    summary_only: bool = typer.Option(False, "--summary", help="Print the summary and layer table only, not the diff."),
    all_layers: bool = typer.Option(False, "--all-layers", help="List every layer, not only the changed ones."),
    seq_len: int = typer.Option(16, help="Sequence length of the example input when A or B is a text model to trace."),
    force: bool = typer.Option(False, help="Replace the --html file if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON (no diff)."),
) -> None:
    """Diff two graphs: unified IR diff with width changes highlighted, nodes and params/FLOPs per layer."""
    from prunec.diff_render import render_summary, render_unified
    from prunec.graph_diff import diff_ir, read_ir

    if html is not None and html.exists() and not force:
        raise OutputExistsError(f"{html} already exists; choose another --html path or pass --force to replace it")
    with progress_bar() as progress:
        progress.add_task(f"reading {a} and {b}", total=None)
        diff = diff_ir(read_ir(a, seq_len=seq_len), read_ir(b, seq_len=seq_len), a, b)
    if html is not None:
        from prunec.diff_html import render_html

        with atomic_output_file(html, overwrite=force) as tmp:
            tmp.write_text(render_html(diff), encoding="utf-8")
    if json_out:
        print(json.dumps(diff.summary(), indent=2))
        return
    if not summary_only:
        render_unified(diff, out)
    render_summary(diff, out, all_layers=all_layers)
    if html is not None:
        out.print(f"wrote {html}")
