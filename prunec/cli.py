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
from prunec.budget import Budget
from prunec.calibration import CalibrationConfig, load_calibration
from prunec.evaluate import mean_embedding_cosine, perplexity, tokenize_file
from prunec.recovery import RecoveryConfig, distill
from prunec.schedule import ScheduleConfig, gradual_prune
from prunec.errors import ConfigError, OutputExistsError, PruneError, RegressionError
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
    budget: Optional[str] = typer.Option(None, help="Instead of --ratio: params=0.8 keeps 80% of the non-embedding parameters."),
    kinds: str = typer.Option("auto", help="Comma-separated kinds: channels,heads,residual,head_dim; auto: "
                              "channels with --calib (the measured best LLM recipe), else channels,heads,residual."),
    width: list[str] = typer.Option([], help="Explicit target width per kind, e.g. --width channels=1152 --width heads=6."),
    importance: str = typer.Option("auto", help="l1, l2, random, activation, fluctuation, taylor; auto: fluctuation with --calib, else l2."),
    allocation: str = typer.Option("uniform", help="uniform or global."),
    calib: Optional[Path] = typer.Option(None, help="Calibration data: text, JSONL ({\"text\": ...}) or .npz."),
    calib_samples: int = typer.Option(32, help="Number of calibration samples."),
    calib_seq_len: int = typer.Option(256, help="Tokens per calibration sample (text)."),
    reconstruct: Optional[bool] = typer.Option(None, help="Least-squares refit of layers that lose inputs (default: on with --calib)."),
    bias_compensation: bool = typer.Option(False, help="Fold removed inputs' mean into biases (implied by --reconstruct)."),
    recover: bool = typer.Option(False, help="Distil the pruned model from the original on the calibration data."),
    recover_steps: int = typer.Option(64, help="Optimizer steps of --recover."),
    recover_lr: float = typer.Option(2e-5, help="Learning rate of --recover."),
    steps: int = typer.Option(1, help="Reach the budget in this many steps, evaluating on held-out calibration data."),
    max_step_regression: float = typer.Option(1.5, help="Roll back a step whose held-out metric worsens by more than this factor."),
    ignore: list[str] = typer.Option([], help="Parameter name or module prefix to leave untouched (repeatable)."),
    seq_len: int = typer.Option(16, help="Sequence length of the example input for text models (without --calib)."),
    force: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Prune MODEL (by --ratio per group, or to a --budget) and write the pruned program and a report."""
    validate_ratio(ratio)
    if kinds == "auto":
        # Measured on SmolLM2-135M (benchmarks/llm_ppl.py): FFN units alone beat FFN + heads at the
        # same parameter budget once layers are refitted; heads come in coarse steps (3 per KV group).
        kinds = "channels" if calib else ",".join(DEFAULT_KINDS)
    kind_tuple = _parse_kinds(kinds)
    parsed_budget = Budget.parse(budget) if budget else None
    widths = _parse_widths(width)
    if importance == "auto":
        importance = "fluctuation" if calib else "l2"
    reconstruct = bool(calib) if reconstruct is None else reconstruct
    if steps > 1 and parsed_budget is None:
        raise ConfigError("--steps needs a --budget (e.g. --budget params=0.8)")
    if recover and not calib:
        raise ConfigError("--recover needs calibration data (--calib FILE)")
    if steps > 1 and widths:
        raise ConfigError("--steps works with --budget, not with --width")
    if output.exists() and not force:
        raise OutputExistsError(f"output {output} already exists; choose another -o or pass --force to replace it")
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        loaded = load_model(model, seq_len=seq_len)
        if any(p.device.type == "meta" for p in loaded.model.parameters()):
            raise ConfigError(f"{model} has no weights (only a config); prune needs real weights")
        calibration = holdout = None
        if calib is not None:
            progress.update(task, description=f"reading calibration data {calib}")
            batches = load_calibration(calib, loaded.tokenizer, CalibrationConfig(calib_samples, calib_seq_len))
            # The traced graph has static shapes: trace with the calibration batch shape.
            loaded.args = batches[0]
            calibration, holdout = (batches[: max(1, len(batches) * 4 // 5)], batches[len(batches) * 4 // 5 :]) \
                if steps > 1 else (batches, [])
        with torch.no_grad():
            reference = loaded.model(*loaded.args, **loaded.kwargs)
        flops_before = count_flops(loaded.model, loaded.args, loaded.kwargs)
        options = dict(kinds=kind_tuple, importance=importance, allocation=allocation, ignore=tuple(ignore),
                       calibration=calibration, reconstruct=reconstruct, bias_compensation=bias_compensation)
        history = []
        # Recovery runs once at the end (after the whole schedule), not inside each step.
        if steps > 1:
            if not holdout:
                raise ConfigError("--steps needs held-out data: give --calib at least 2 samples")
            progress.update(task, description=f"pruning in {steps} steps")
            evaluate = functools.partial(_heldout_perplexity, holdout=holdout)
            scheduled = gradual_prune(loaded.model, loaded.args, loaded.kwargs, budget=parsed_budget, evaluate=evaluate,
                                      schedule=ScheduleConfig(steps, max_step_regression), **options)
            history = [vars(r) for r in scheduled.history]
            if scheduled.result is None:
                raise ConfigError(f"the first step already regressed the held-out metric beyond "
                                  f"{max_step_regression}x; use a smaller budget or more steps")
            result = scheduled.result
        else:
            progress.update(task, description="tracing, analysing, pruning")
            result = prune(loaded.model, loaded.args, loaded.kwargs, ratio=ratio, budget=parsed_budget,
                           widths=widths, **options)
        if recover:
            progress.update(task, description=f"recovering ({recover_steps} distillation steps)")
            result.recovery_losses = distill(result.module, loaded.model, calibration,
                                             RecoveryConfig(steps=recover_steps, lr=recover_lr), loaded.kwargs)
        progress.update(task, description="verifying")
        with torch.no_grad():
            pruned_out = result.module(*loaded.args, **loaded.kwargs)
        diff = max_abs_diff(reference, pruned_out)
        flops_after = count_flops(result.module, loaded.args, loaded.kwargs)
        progress.update(task, description=f"writing {output}")
        summary = {
            "model": model,
            "ratio": None if parsed_budget else ratio,
            "budget": budget,
            "kinds": list(kind_tuple),
            "importance": importance,
            "allocation": allocation,
            "calibration": str(calib) if calib else None,
            "reconstruct": reconstruct,
            "recovery_losses": [round(v, 4) for v in result.recovery_losses],
            "steps": steps,
            "schedule": history,
            "params_before": result.params_before,
            "params_after": result.params_after,
            "params_removed_fraction": round(result.removed_fraction, 4),
            "non_embedding_params_before": result.non_embedding_before,
            "non_embedding_params_after": result.non_embedding_after,
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
    for record in history:
        out.print(f"  step {record['step']}: keep {record['keep_target']:.3f} of non-embedding params, "
                  f"held-out metric {record['metric']:.3f} ({'kept' if record['accepted'] else 'rolled back'})")
    out.print(f"pruned {summary['groups_pruned']} groups, {summary['units_removed']} units; "
              f"max |pruned - original| = {diff:.3g}; wrote {output}/model.pt2, report.json, report.md "
              f"in {summary['seconds']:.1f}s")
    hf_dir = summary["hf_directory"]
    if hf_dir.startswith("hf"):
        out.print(f"Hugging Face model (stock from_pretrained loads it): {output}/{hf_dir}")
    elif hf_dir:
        out.print(f"no Hugging Face directory: {hf_dir}")


def _parse_widths(items: list[str]) -> dict[str, int] | None:
    widths = {}
    for item in items:
        kind, _, value = item.partition("=")
        if not value.isdigit():
            raise ConfigError(f"--width '{item}' is not KIND=UNITS, e.g. --width channels=1152")
        widths[kind] = int(value)
    return widths or None


def _heldout_perplexity(module: torch.nn.Module, holdout: list[tuple]) -> float:
    ids = torch.cat([b[0].reshape(-1) for b in holdout])
    return perplexity(module, ids, window=holdout[0][0].shape[-1], n_windows=len(ids))


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


@app.command()
@_clean_errors
def check(
    base: str = typer.Argument(..., help="The reference model (any MODEL form)."),
    pruned: str = typer.Argument(..., help="The pruned model: its hf/ directory or model.pt2, or any MODEL form."),
    data: Path = typer.Option(..., help="Evaluation text (never the calibration data)."),
    metric: str = typer.Option("ppl", help="ppl (language models) or cosine (encoders: mean-pooled embeddings)."),
    max_ratio: float = typer.Option(1.2, help="ppl: fail if pruned/base perplexity exceeds this."),
    min_cosine: float = typer.Option(0.95, help="cosine: fail if the mean cosine similarity is below this."),
    seq_len: int = typer.Option(512, help="ppl: tokens per window (a .pt2 program uses its traced length)."),
    windows: int = typer.Option(24, help="ppl: number of windows (cosine: number of lines)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Regression gate for CI: exit 7 when PRUNED is worse than BASE beyond the tolerance."""
    if not data.exists() or data.stat().st_size == 0:
        raise ConfigError(f"evaluation data {data} is missing or empty")
    with _progress() as progress:
        task = progress.add_task(f"loading {base} and {pruned}", total=None)
        ref = load_model(base, seq_len=seq_len)
        cand = load_model(pruned, seq_len=seq_len)
        tokenizer = cand.tokenizer or ref.tokenizer
        if tokenizer is None:
            raise ConfigError("neither model has a tokenizer; check needs one to read the evaluation text")
        progress.update(task, description=f"evaluating {metric}")
        if metric == "ppl":
            window = cand.args[0].shape[-1] if pruned.endswith(".pt2") else seq_len
            ids = tokenize_file(data, tokenizer)
            base_value = perplexity(ref.model, ids, window, windows)
            pruned_value = perplexity(cand.model, ids, window, windows)
            ratio_value = pruned_value / base_value
            ok = ratio_value <= max_ratio
            limit = f"ratio <= {max_ratio}"
        elif metric == "cosine":
            lines = [l for l in data.read_text(encoding="utf-8").splitlines() if l.strip()][:windows]
            base_value = pruned_value = ratio_value = mean_embedding_cosine(ref.model, cand.model, tokenizer, lines)
            ok = ratio_value >= min_cosine
            limit = f"cosine >= {min_cosine}"
        else:
            raise ConfigError(f"unknown metric '{metric}'; choose ppl or cosine")
    result = {"metric": metric, "base": base_value, "pruned": pruned_value, "value": ratio_value,
              "limit": limit, "passed": ok}
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        table = Table(title=f"prunec check ({metric})")
        for col in ("base", "pruned", "value", "limit", "verdict"):
            table.add_column(col)
        table.add_row(f"{base_value:.4g}", f"{pruned_value:.4g}", f"{ratio_value:.4g}", limit,
                      "[green]pass[/]" if ok else "[red]REGRESSED[/]")
        out.print(table)
    if not ok:
        raise RegressionError(f"{pruned} regressed: {metric} value {ratio_value:.4g} fails {limit}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
