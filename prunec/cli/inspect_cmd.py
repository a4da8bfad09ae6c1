"""`prunec inspect`: trace and analyse a model, list its coupled groups."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from prunec.cli.common import app, clean_errors, out, progress_bar
from prunec.metrics import count_flops
from prunec.models import load_model
from prunec.prune import analyze, count_parameters
from prunec.report import analysis_dict, frozen_reasons, group_row


@app.command()
@clean_errors
def inspect(
    model: str = typer.Argument(..., help="HF directory, .gguf, .pt2, package.module:factory, or a short name."),
    seq_len: int = typer.Option(16, help="Sequence length of the example input for text models."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code from the model files to run (full pickles, Hugging Face custom code). Only for files you trust."),
    json_out: bool = typer.Option(False, "--json", help="Print the analysis as JSON."),
    show_frozen: bool = typer.Option(False, "--frozen", help="List frozen groups too."),
    keep_interface: bool = typer.Option(True, help="Freeze units that reach a model output."),
) -> None:
    """Trace and analyse MODEL: list its coupled channel groups, parameters and FLOPs."""
    with progress_bar() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        loaded = load_model(model, seq_len=seq_len, trust_remote_code=trust_remote_code)
        progress.update(task, description="tracing and analysing")
        analysis = analyze(loaded.model, loaded.args, loaded.kwargs, keep_interface=keep_interface)
        on_meta = any(p.device.type == "meta" for p in loaded.model.parameters())
        progress.update(task, description="counting FLOPs")
        flops = count_flops(analysis.graph_module, loaded.args, loaded.kwargs)
    params = count_parameters(loaded.model)
    if json_out:
        data = analysis_dict(analysis)
        data.update(model=model, params=params, flops=flops, weights=not on_meta)
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"{loaded.name}: coupled groups", show_lines=False)
    for col in ("id", "kind", "units", "members", "params/unit", "first member", "frozen because"):
        table.add_column(col, overflow="fold")
    for g in analysis.groups:
        if g.frozen and not show_frozen:
            continue
        row = group_row(analysis, g)
        units = f"{g.size}" + (f" ({g.blocks} kv groups)" if g.blocks > 1 else "")
        table.add_row(str(g.id), g.kind, units, str(len(g.members)), str(g.params_per_unit), g.label,
                      row["frozen"][0] if row["frozen"] else "")
    out.print(table)
    s = analysis.summary()
    out.print(f"params {params:,}  FLOPs {flops:,}  groups {s['groups']} "
              f"(prunable {s['prunable']}: {s['prunable_by_kind']}, frozen {s['frozen']})")
    out.print(f"trace {analysis.trace_seconds:.2f}s  analysis {analysis.seconds:.2f}s"
              + ("  (weights on meta: shapes only)" if on_meta else ""))
    reasons = frozen_reasons(analysis)
    if reasons:
        out.print("frozen groups by reason" + ("" if show_frozen else " (list them with --frozen)") + ":")
        for reason, n in reasons.most_common():
            out.print(f"  {n:4d}  {reason}")
