"""The ``prunec`` command line: inspect and prune models."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from prunec.analysis.groups import DEFAULT_KINDS
from prunec.errors import ConfigError, OutputExistsError, PruneError
from prunec.metrics import count_flops
from prunec.models import load_model
from prunec.output import atomic_output_dir
from prunec.prune import analyze, count_parameters, prune, validate_kinds, validate_ratio
from prunec.report import analysis_dict, frozen_reasons, group_row, markdown_report
from prunec.testing import max_abs_diff

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Structured pruning as a compiler pipeline: trace, analyse, remove, lower, verify.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a PruneError into one line on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PruneError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def _parse_kinds(kinds: str) -> tuple[str, ...]:
    return validate_kinds(tuple(k.strip() for k in kinds.split(",") if k.strip()))


@app.command()
@_clean_errors
def inspect(
    model: str = typer.Argument(..., help="HF directory, .gguf, .pt2, package.module:factory, or a short name."),
    seq_len: int = typer.Option(16, help="Sequence length of the example input for text models."),
    json_out: bool = typer.Option(False, "--json", help="Print the analysis as JSON."),
    show_frozen: bool = typer.Option(False, "--frozen", help="List frozen groups too."),
    keep_interface: bool = typer.Option(True, help="Freeze units that reach a model output."),
) -> None:
    """Trace and analyse MODEL: list its coupled channel groups, parameters and FLOPs."""
    with _progress() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        loaded = load_model(model, seq_len=seq_len)
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


@app.command("prune")
@_clean_errors
def prune_cmd(
    model: str = typer.Argument(..., help="HF directory, .gguf, .pt2, package.module:factory, or a short name."),
    output: Path = typer.Option(..., "-o", "--output", help="Output directory (must not exist unless --force)."),
    ratio: float = typer.Option(0.3, help="Fraction of each prunable group's units to remove, in [0, 1)."),
    kinds: str = typer.Option(",".join(DEFAULT_KINDS), help="Comma-separated kinds: channels,heads,residual,head_dim."),
    importance: str = typer.Option("l2", help="Importance estimator: l1, l2, random."),
    allocation: str = typer.Option("uniform", help="Allocation strategy."),
    ignore: list[str] = typer.Option([], help="Parameter name or module prefix to leave untouched (repeatable)."),
    seq_len: int = typer.Option(16, help="Sequence length of the example input for text models."),
    force: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Remove a fraction of every prunable group of MODEL and write the pruned program and a report."""
    validate_ratio(ratio)
    kind_tuple = _parse_kinds(kinds)
    if output.exists() and not force:
        raise OutputExistsError(f"output {output} already exists; choose another -o or pass --force to replace it")
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        loaded = load_model(model, seq_len=seq_len)
        if any(p.device.type == "meta" for p in loaded.model.parameters()):
            raise ConfigError(f"{model} has no weights (only a config); prune needs real weights")
        with torch.no_grad():
            reference = loaded.model(*loaded.args, **loaded.kwargs)
        flops_before = count_flops(loaded.model, loaded.args, loaded.kwargs)
        progress.update(task, description="tracing, analysing, pruning")
        result = prune(loaded.model, loaded.args, loaded.kwargs, ratio=ratio, kinds=kind_tuple,
                       importance=importance, allocation=allocation, ignore=tuple(ignore))
        progress.update(task, description="verifying")
        with torch.no_grad():
            pruned_out = result.module(*loaded.args, **loaded.kwargs)
        diff = max_abs_diff(reference, pruned_out)
        flops_after = count_flops(result.module, loaded.args, loaded.kwargs)
        progress.update(task, description=f"writing {output}")
        summary = {
            "model": model,
            "ratio": ratio,
            "kinds": list(kind_tuple),
            "importance": importance,
            "allocation": allocation,
            "params_before": result.params_before,
            "params_after": result.params_after,
            "params_removed_fraction": round(result.removed_fraction, 4),
            "flops_before": flops_before,
            "flops_after": flops_after,
            "groups_pruned": len(result.removed),
            "units_removed": sum(len(u) for u in result.removed.values()),
            "max_abs_diff_vs_original": diff,
            "analysis": result.analysis.summary(),
        }
        with atomic_output_dir(output, overwrite=force) as tmp:
            ep = torch.export.export(result.module, loaded.args, loaded.kwargs, strict=False)
            torch.export.save(ep, str(tmp / "model.pt2"))
            summary["hf_directory"] = _write_pretrained(result, loaded, tmp / "hf")
            report = analysis_dict(result.analysis)
            report["removed"] = {str(k): list(v) for k, v in result.removed.items()}
            summary["seconds"] = round(time.perf_counter() - start, 2)
            report["summary"] = summary
            (tmp / "report.json").write_text(json.dumps(report, indent=2))
            (tmp / "report.md").write_text(markdown_report(f"prunec prune {model}", summary, result.analysis,
                                                           result.removed))
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    out.print(f"[bold]{model}[/]: params {result.params_before:,} -> {result.params_after:,} "
              f"(-{result.removed_fraction:.1%}), FLOPs {flops_before:,} -> {flops_after:,} "
              f"(-{1 - flops_after / max(flops_before, 1):.1%})")
    out.print(f"pruned {summary['groups_pruned']} groups, {summary['units_removed']} units; "
              f"max |pruned - original| = {diff:.3g}; wrote {output}/model.pt2, report.json, report.md "
              f"in {summary['seconds']:.1f}s")
    hf_dir = summary["hf_directory"]
    if hf_dir.startswith("hf"):
        out.print(f"Hugging Face model (stock from_pretrained loads it): {output}/{hf_dir}")
    elif hf_dir:
        out.print(f"no Hugging Face directory: {hf_dir}")


def _write_pretrained(result: Any, loaded: Any, directory: Path) -> str:
    """Save the pruned model as a Hugging Face directory when its class can express it.

    Returns ``"hf"`` when written, else the reason it was not (empty for non-HF models).
    """
    from prunec.hf import supported

    if not hasattr(loaded.model, "save_pretrained"):
        return ""
    if not supported(loaded.model):
        return f"{type(loaded.model).__name__} is not a supported family for write-back"
    try:
        model = result.to_pretrained()
    except ConfigError as exc:
        return str(exc)
    model.save_pretrained(directory)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(directory)
    return "hf"


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
