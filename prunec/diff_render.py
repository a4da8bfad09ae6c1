"""Terminal rendering of a :class:`~prunec.graph_diff.GraphDiff` (Rich): the diff with width changes
highlighted, then a summary and the per-layer params/FLOPs table."""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table
from rich.text import Text

from prunec.graph_diff import GraphDiff, token_spans

_NAME = re.compile(r"^[-+]%(\S+) = ")


def _paired(block_minus: list[str], block_plus: list[str]) -> dict[str, tuple[str, str]]:
    by_name = {m.group(1): l for l in block_plus if (m := _NAME.match(l))}
    return {m.group(1): (l, by_name[m.group(1)]) for l in block_minus
            if (m := _NAME.match(l)) and m.group(1) in by_name}


def _highlighted(line: str, other: str | None, style: str) -> Text:
    text = Text(style=style)
    if other is None:
        text.append(line)
        return text
    text.append(line[0])
    spans, _ = token_spans(line[1:], other[1:])
    for piece, differs in spans:
        text.append(piece, style=f"bold reverse {style}" if differs else style)
    return text


def render_unified(diff: GraphDiff, console: Console) -> None:
    """Print the unified diff; in a node changed on both sides, the differing tokens (widths) stand out."""
    lines = diff.unified.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("---", "+++")):
            console.print(Text(line, style="bold"))
            i += 1
        elif line.startswith("@@"):
            console.print(Text(line, style="cyan"))
            i += 1
        elif line.startswith(("-", "+")):
            minus, plus = [], []
            while i < len(lines) and lines[i].startswith("-") and not lines[i].startswith("---"):
                minus.append(lines[i])
                i += 1
            while i < len(lines) and lines[i].startswith("+") and not lines[i].startswith("+++"):
                plus.append(lines[i])
                i += 1
            pairs = _paired(minus, plus)
            after_of = {a: b for a, b in pairs.values()}
            before_of = {b: a for a, b in pairs.values()}
            for l in minus:
                console.print(_highlighted(l, after_of.get(l), "red"))
            for l in plus:
                console.print(_highlighted(l, before_of.get(l), "green"))
        else:
            console.print(Text(line, style="dim"))
            i += 1


def _delta(before: int, after: int) -> str:
    if before == after:
        return f"{after:,}"
    change = f" ({(after - before) / before:+.1%})" if before else ""
    return f"{before:,} -> {after:,}{change}"


def render_summary(diff: GraphDiff, console: Console, *, all_layers: bool = False) -> None:
    """Print the node counts, totals and the per-layer table (changed layers unless ``all_layers``)."""
    t = diff.totals
    console.print(f"[bold]{diff.a_name}[/] -> [bold]{diff.b_name}[/]: nodes added {len(diff.added)}, "
                  f"removed {len(diff.removed)}, changed {len(diff.changed)}")
    console.print(f"params {_delta(t['params_before'], t['params_after'])}   "
                  f"FLOPs {_delta(t['flops_before'], t['flops_after'])}")
    rows = [c for c in diff.layers if all_layers or c.changed]
    if not rows:
        console.print("no layer changed")
        return
    table = Table(title="per layer" + ("" if all_layers else " (changed only)"))
    for col in ("layer", "op", "weight before", "weight after", "params", "FLOPs"):
        table.add_column(col, overflow="fold")
    for c in rows:
        shape_b = str(list(c.before.shape)) if c.before and c.before.shape else "-"
        shape_a = str(list(c.after.shape)) if c.after and c.after.shape else "-"
        style = "yellow" if c.before and c.after and c.before.shape != c.after.shape else None
        table.add_row(c.name, c.op, shape_b, Text(shape_a, style=style or ""),
                      _delta(c.before.params if c.before else 0, c.after.params if c.after else 0),
                      _delta(c.before.flops if c.before else 0, c.after.flops if c.after else 0))
    console.print(table)
    failed = sum(diff.unreplayed)
    if failed:
        console.print(f"[dim]{failed} call(s) could not be replayed for FLOPs (counted as 0)[/]")
