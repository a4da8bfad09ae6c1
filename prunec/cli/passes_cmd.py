"""`prunec passes`: list every pass (built-in, plugins, --pass-file) with its doc and contract."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from prunec.cli.common import app, clean_errors, out
from prunec.pass_loading import available_passes


@app.command("passes")
@clean_errors
def passes_cmd(
    pass_file: list[Path] = typer.Option([], "--pass-file", help="Also load passes from this Python file (repeatable; it is executed)."),
    json_out: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List all passes with their one-line docs, requires/ensures, and where they come from."""
    passes = available_passes(pass_file)
    rows = [{"name": info.name, "doc": info.doc, "requires": list(info.requires), "ensures": list(info.ensures),
             "invalidates": list(info.invalidates), "exact": info.exact, "source": info.source}
            for info in sorted(passes.values(), key=lambda i: (i.source != "built-in", i.name))]
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="passes", show_lines=False)
    for col in ("name", "what it does", "requires", "ensures", "exact", "from"):
        table.add_column(col, overflow="fold")
    for r in rows:
        ensures = ", ".join(r["ensures"]) + (f" (breaks: {', '.join(r['invalidates'])})" if r["invalidates"] else "")
        table.add_row(r["name"], r["doc"], ", ".join(r["requires"]) or "-", ensures or "-",
                      "yes" if r["exact"] else "no", r["source"])
    out.print(table)
    out.print("run them with: prunec opt MODEL --passes NAME[,NAME(opt=value)...] -o OUT.pt2")
