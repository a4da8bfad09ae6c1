"""`prunec check`: the regression gate for users' CI (metrics: :data:`prunec.check_metrics.METRICS`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from prunec.calibration import check_data_file
from prunec.check_metrics import METRICS
from prunec.cli.common import app, clean_errors, out, progress_bar
from prunec.errors import ConfigError, RegressionError
from prunec.gate import CheckContext, CheckResult, GateOptions, run_check
from prunec.models import load_model

_METRIC_HELP = "; ".join(f"{m.name} ({m.help})" for m in METRICS.values())


@app.command()
@clean_errors
def check(
    base: str = typer.Argument(..., help="The reference model (any MODEL form)."),
    pruned: str = typer.Argument(..., help="The pruned model: its hf/ directory or model.pt2, or any MODEL form."),
    data: Path = typer.Option(..., help="Evaluation data (never the calibration data); its form depends on --metric."),
    metric: str = typer.Option("ppl", help=f"What to compare: {_METRIC_HELP}."),
    max_ratio: float = typer.Option(1.2, help="ppl: fail if pruned/base perplexity exceeds this."),
    min_cosine: float = typer.Option(0.95, help="cosine: fail if the mean cosine similarity is below this."),
    max_drop: float = typer.Option(0.01, help="accuracy: fail if accuracy drops by more than this (absolute, 0.01 = 1 point)."),
    min_retention: float = typer.Option(0.9, help="qa: fail if the pruned model keeps less than this share of the "
                                        "questions the base answers correctly."),
    min_ratio: float = typer.Option(0.9, help="rouge: fail if pruned/base ROUGE-L is below this."),
    min_agreement: float = typer.Option(0.8, help="agreement: fail if the token-level agreement of the greedy "
                                        "continuations is below this."),
    max_new_tokens: int = typer.Option(32, min=1, help="qa/rouge/agreement: tokens generated per prompt (greedy)."),
    chat_template: bool = typer.Option(True, help="qa/rouge/agreement: wrap each prompt in the tokenizer's chat "
                                       "template, when it has one."),
    limit: Optional[int] = typer.Option(None, min=1, help="qa/rouge/agreement: use only the first N records."),
    seq_len: int = typer.Option(512, help="ppl: tokens per window (a .pt2 program uses its traced length)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code from the model files to run (full pickles, Hugging Face custom code). Only for files you trust."),
    windows: int = typer.Option(24, help="ppl: number of windows (cosine: number of lines)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Regression gate for CI: exit 7 when PRUNED is worse than BASE beyond the tolerance."""
    chosen = METRICS.get(metric)
    if chosen is None:
        raise ConfigError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    check_data_file(data, "evaluation data (--data)")
    if chosen.check_data is not None:
        chosen.check_data(data)
    options = GateOptions(max_ratio=max_ratio, min_cosine=min_cosine, max_drop=max_drop, min_retention=min_retention,
                          min_ratio=min_ratio, min_agreement=min_agreement, seq_len=seq_len, windows=windows,
                          max_new_tokens=max_new_tokens, chat_template=chat_template, limit=limit)
    with progress_bar() as progress:
        task = progress.add_task(f"loading {base} and {pruned}", total=None)
        ref = load_model(base, seq_len=seq_len, trust_remote_code=trust_remote_code)
        cand = load_model(pruned, seq_len=seq_len, trust_remote_code=trust_remote_code)
        tokenizer = cand.tokenizer or ref.tokenizer
        if tokenizer is None and chosen.needs_tokenizer:
            raise ConfigError("neither model has a tokenizer; check needs one to read the evaluation text")
        progress.update(task, description=f"evaluating {metric}")
        result = run_check(chosen, CheckContext(ref, cand, pruned, data, tokenizer, options))
    _report(result, json_out)
    if not result.passed:
        raise RegressionError(f"{pruned} regressed: {metric} {result.rule.quantity} "
                              f"{result.measurement.value:.4g} fails {result.limit}")


def _report(result: CheckResult, json_out: bool) -> None:
    if json_out:
        print(json.dumps(result.as_json(), indent=2))
        return
    m = result.measurement
    table = Table(title=f"prunec check ({result.metric})")
    for col in ("base", "pruned", result.rule.quantity, "limit", "verdict"):
        table.add_column(col)
    table.add_row(f"{m.base:.4g}", f"{m.pruned:.4g}", f"{m.value:.4g}", result.limit,
                  "[green]pass[/]" if result.passed else "[red]REGRESSED[/]")
    out.print(table)
    scalars = {k: v for k, v in m.details.items() if isinstance(v, (int, float))}
    if scalars:
        out.print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items()))
    for prompt in m.details.get("lost", []):
        out.print(f"lost: {prompt}", highlight=False)
