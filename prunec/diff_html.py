"""A self-contained HTML page for a :class:`~prunec.graph_diff.GraphDiff` (no scripts, no external assets).

Sections: summary cards; a per-layer width chart (inline SVG, before vs after); the
params/FLOPs table per layer; the changed nodes with the differing tokens marked; the IR
side by side (``difflib.HtmlDiff``).
"""

from __future__ import annotations

import difflib
from html import escape

from prunec.graph_diff import NO_WEIGHTS, GraphDiff, Layer, LayerChange, token_spans

MAX_CHART_ROWS = 60
MAX_NODE_ROWS = 400

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
main{max-width:1280px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
.sides code{background:#e4e7eb;padding:1px 6px;border-radius:4px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:14px}
.card{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:10px 14px;min-width:150px}
.card .k{color:#52606d;font-size:12px;text-transform:uppercase;letter-spacing:.04em}.card .v{font-size:16px;font-weight:600}
.down{color:#1f7a3d}.up{color:#b42318}
table.grid{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d9e2ec}
table.grid th,table.grid td{padding:4px 8px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
table.grid th{background:#eef2f6;font-weight:600}table.grid td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.costs code{white-space:nowrap}
table.grid tr.changed td{background:#fffbea}
code,.ir{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td.ir{white-space:pre-wrap;word-break:break-all}
mark.del{background:#ffd8d6;color:#8a1c12;font-weight:600}mark.ins{background:#c9f2d4;color:#14532d;font-weight:600}
.chart{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:8px;overflow-x:auto}
.note{color:#52606d;font-size:12px}
.scroll{overflow-x:auto;border:1px solid #d9e2ec;border-radius:8px;background:#fff}
table.diff{font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;border-collapse:collapse;background:#fff}
table.diff td{padding:0 6px;white-space:pre;vertical-align:top}
table.diff span.diff_chg,table.diff span.diff_add,table.diff span.diff_sub{font-weight:700;border-radius:2px}
table.diff th,.diff_header{background:#eef2f6;color:#52606d;text-align:right}
.diff_next{background:#eef2f6}.diff_add{background:#c9f2d4}.diff_chg{background:#fff3bf}.diff_sub{background:#ffd8d6}
details summary{cursor:pointer;font-weight:600;margin:8px 0}
"""


def _pct(before: int, after: int) -> str:
    if not before or before == after:
        return ""
    change = (after - before) / before
    return f' <span class="{"down" if change < 0 else "up"}">{change:+.1%}</span>'


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="k">{escape(key)}</div><div class="v">{value}</div></div>'


def _cards(diff: GraphDiff) -> str:
    t = diff.totals
    return '<div class="cards">' + "".join([
        _card("nodes added", str(len(diff.added))),
        _card("nodes removed", str(len(diff.removed))),
        _card("nodes changed", str(len(diff.changed))),
        _card("params", f"{t['params_before']:,} &rarr; {t['params_after']:,}{_pct(t['params_before'], t['params_after'])}"),
        _card("FLOPs", f"{t['flops_before']:,} &rarr; {t['flops_after']:,}{_pct(t['flops_before'], t['flops_after'])}"),
    ]) + "</div>"


def _short(name: str, limit: int = 46) -> str:
    """``name`` or its trailing dotted parts that fit, after an ellipsis (the full name is the tooltip)."""
    if len(name) <= limit:
        return name
    parts = name.split(".")
    while len(parts) > 1 and len(".".join(parts)) > limit - 2:
        parts.pop(0)
    tail = ".".join(parts)
    return "…." + tail if len(tail) <= limit - 2 else "…" + name[-(limit - 1):]


def _width(layer: Layer | None) -> int:
    return (layer.width or 0) if layer is not None else 0


def width_chart(layers: list[LayerChange]) -> str:
    """Inline SVG: one row per layer, the width before (grey) and after (blue)."""
    rows = [c for c in layers if c.name != NO_WEIGHTS and ((c.before and c.before.width) or (c.after and c.after.width))]
    note = ""
    if len(rows) > MAX_CHART_ROWS:
        changed = [c for c in rows if c.changed]
        note = (f'<p class="note">{len(rows)} layers; showing the {min(len(changed), MAX_CHART_ROWS)} '
                f'that changed{" (first " + str(MAX_CHART_ROWS) + ")" if len(changed) > MAX_CHART_ROWS else ""}.</p>')
        rows = changed[:MAX_CHART_ROWS]
    if not rows:
        return '<p class="note">No layer with weights.</p>'
    # Room for the longest (shortened) label at ~7px per character of the 12px font.
    label_w = min(340, 24 + 7 * max(len(_short(c.name)) for c in rows))
    bar_w, row_h, top = 560, 30, 34
    biggest = max(max(_width(c.before), _width(c.after)) for c in rows) or 1
    height = top + row_h * len(rows) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 150}" height="{height}" '
             f'role="img" aria-label="per-layer width before and after" font-family="system-ui,sans-serif" font-size="12">',
             '<rect x="0" y="0" width="100%" height="100%" fill="#ffffff"/>',
             f'<rect x="{label_w}" y="8" width="14" height="10" fill="#9aa5b1"/><text x="{label_w + 20}" y="17">before</text>',
             f'<rect x="{label_w + 90}" y="8" width="14" height="10" fill="#2b7de9"/><text x="{label_w + 110}" y="17">after</text>']
    for i, c in enumerate(rows):
        y = top + i * row_h
        wb, wa = _width(c.before), _width(c.after)
        lb, la = bar_w * wb / biggest, bar_w * wa / biggest
        colour = "#1f2933" if c.changed else "#7b8794"
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" fill="{colour}">'
                     f'<title>{escape(c.name)}</title>{escape(_short(c.name))}</text>')
        parts.append(f'<rect class="before" x="{label_w}" y="{y + 2}" width="{lb:.1f}" height="11" fill="#9aa5b1"/>')
        parts.append(f'<rect class="after" x="{label_w}" y="{y + 14}" width="{la:.1f}" height="11" fill="#2b7de9"/>')
        if c.after is None:
            value = f"{wb} → removed"
        elif c.before is None:
            value = f"new: {wa}"
        else:
            value = f"{wb} → {wa}" if wb != wa else f"{wa}"
        parts.append(f'<text x="{label_w + max(lb, la) + 6:.1f}" y="{y + 18}" fill="{colour}">{value}</text>')
    parts.append("</svg>")
    return note + '<div class="chart">' + "".join(parts) + "</div>"


def _shape(layer: Layer | None) -> str:
    return escape(str(list(layer.shape))) if layer is not None and layer.shape else "&ndash;"


def cost_table(layers: list[LayerChange]) -> str:
    """Per layer: weight shape, params and FLOPs before and after."""
    head = ("<tr><th>layer</th><th>op</th><th>weight before</th><th>weight after</th><th>params before</th>"
            "<th>params after</th><th>FLOPs before</th><th>FLOPs after</th></tr>")
    body = []
    for c in layers:
        if c.name == NO_WEIGHTS and not (c.before and c.before.flops) and not (c.after and c.after.flops):
            continue  # weightless ops without FLOPs (activations, views) say nothing here
        pb, pa = (c.before.params if c.before else 0), (c.after.params if c.after else 0)
        fb, fa = (c.before.flops if c.before else 0), (c.after.flops if c.after else 0)
        body.append(f'<tr class="{"changed" if c.changed else ""}"><td><code>{escape(c.name)}</code></td>'
                    f"<td>{escape(c.op)}</td><td><code>{_shape(c.before)}</code></td><td><code>{_shape(c.after)}</code></td>"
                    f'<td class="n">{pb:,}</td><td class="n">{pa:,}{_pct(pb, pa)}</td>'
                    f'<td class="n">{fb:,}</td><td class="n">{fa:,}{_pct(fb, fa)}</td></tr>')
    return f'<table class="grid costs">{head}{"".join(body)}</table>'


def _marked(spans: list[tuple[str, bool]], cls: str) -> str:
    return "".join(f'<mark class="{cls}">{escape(p)}</mark>' if d else escape(p) for p, d in spans)


def node_table(diff: GraphDiff) -> str:
    """Changed nodes with the differing tokens marked, then added and removed nodes."""
    rows = []
    for name, before, after in diff.changed[:MAX_NODE_ROWS]:
        a, b = token_spans(before, after)
        rows.append(f'<tr><td><code>%{escape(name)}</code></td><td class="ir">{_marked(a, "del")}</td>'
                    f'<td class="ir">{_marked(b, "ins")}</td></tr>')
    more = len(diff.changed) - MAX_NODE_ROWS
    extra = f'<p class="note">and {more} more changed nodes (all are in the side-by-side IR below).</p>' if more > 0 else ""
    lists = ""
    for title, names in (("added", diff.added), ("removed", diff.removed)):
        if names:
            lists += (f"<p><b>{len(names)} {title}:</b> " + ", ".join(f"<code>%{escape(n)}</code>" for n in names[:200])
                      + (" …" if len(names) > 200 else "") + "</p>")
    if not rows:
        return lists or '<p class="note">No node changed.</p>'
    return (f'<table class="grid nodes"><tr><th>node</th><th>before</th><th>after</th></tr>{"".join(rows)}</table>'
            + extra + lists)


def render_html(diff: GraphDiff) -> str:
    """The whole page."""
    # No wrap column: HtmlDiff wraps at a fixed character count, mid-token; a scrolling box keeps IR lines whole.
    side_by_side = difflib.HtmlDiff().make_table(
        diff.a_text.splitlines(), diff.b_text.splitlines(), escape(diff.a_name), escape(diff.b_name),
        context=True, numlines=2)
    layers = list(diff.layers)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>prunec diff: {escape(diff.a_name)} vs {escape(diff.b_name)}</title><style>{_CSS}</style></head>
<body><main>
<h1>prunec diff</h1>
<p class="sides"><code>{escape(diff.a_name)}</code> &rarr; <code>{escape(diff.b_name)}</code></p>
{_cards(diff)}
<h2 id="widths">Per-layer width (output channels / features)</h2>
{width_chart(layers)}
<h2 id="costs">Parameters and FLOPs per layer</h2>
<p class="note">Parameters count every tensor a layer owns (buffers such as running statistics included);
FLOPs are PyTorch's flop counter replayed on the printed shapes. Changed rows are highlighted.</p>
{cost_table(layers)}
<h2 id="nodes">Changed nodes</h2>
{node_table(diff)}
<h2 id="ir">IR side by side</h2>
<details open><summary>changed lines with 2 lines of context, before (left) and after (right); changed
characters in bold (scroll sideways for long lines)</summary><div class="scroll">{side_by_side}</div></details>
</main></body></html>
"""
