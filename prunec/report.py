"""Reports: the group table of an analysis and the summary of a pruning run, as dicts and Markdown."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prunec.analysis.analyze import Analysis
from prunec.analysis.groups import Group


def group_row(analysis: Analysis, g: Group) -> dict[str, Any]:
    return {
        "id": g.id,
        "kind": g.kind,
        "size": g.size,
        "kv_groups": g.blocks if g.blocks > 1 else None,
        "members": [str(m) + (" (shared)" if m.shared else "") for m in g.members],
        "params_per_unit": g.params_per_unit,
        "frozen": list(g.frozen),
    }


def analysis_dict(analysis: Analysis) -> dict[str, Any]:
    return {
        "summary": analysis.summary(),
        "trace_seconds": round(analysis.trace_seconds, 3),
        "groups": [group_row(analysis, g) for g in analysis.groups],
        "unhandled_ops": [{"node": n, "reason": r} for n, r in analysis.unhandled_ops],
    }


def frozen_reasons(analysis: Analysis) -> Counter[str]:
    """How many groups each (first) freezing reason accounts for."""
    return Counter(g.frozen[0] for g in analysis.groups if g.frozen)


def markdown_report(title: str, facts: dict[str, Any], analysis: Analysis, removed: dict[int, tuple[int, ...]]) -> str:
    lines = [f"# {title}", ""]
    for k, v in facts.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", "| group | kind | units | removed | first member | frozen because |", "|---|---|---|---|---|---|"]
    for g in analysis.groups:
        lines.append(f"| {g.id} | {g.kind} | {g.size} | {len(removed.get(g.id, ()))} | `{g.label}` | "
                     f"{g.frozen[0] if g.frozen else ''} |")
    return "\n".join(lines) + "\n"
