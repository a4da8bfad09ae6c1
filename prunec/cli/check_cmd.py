"""`prunec check`: the regression gate for users' CI."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from prunec.cli.common import app, clean_errors, out, progress_bar
from prunec.errors import ConfigError, RegressionError
from prunec.evaluate import accuracy, mean_embedding_cosine, perplexity, read_labelled, tokenize_file
from prunec.calibration import check_data_file
from prunec.models import load_model


@app.command()
@clean_errors
def check(
    base: str = typer.Argument(..., help="The reference model (any MODEL form)."),
    pruned: str = typer.Argument(..., help="The pruned model: its hf/ directory or model.pt2, or any MODEL form."),
    data: Path = typer.Option(..., help="Evaluation text (never the calibration data)."),
    metric: str = typer.Option("ppl", help="ppl (language models), cosine (encoders: mean-pooled embeddings) or "
                               "accuracy (classifiers; --data is JSONL {\"text\": ..., \"label\": INT} or .npz with 'labels')."),
    max_ratio: float = typer.Option(1.2, help="ppl: fail if pruned/base perplexity exceeds this."),
    min_cosine: float = typer.Option(0.95, help="cosine: fail if the mean cosine similarity is below this."),
    max_drop: float = typer.Option(0.01, help="accuracy: fail if accuracy drops by more than this (absolute, 0.01 = 1 point)."),
    seq_len: int = typer.Option(512, help="ppl: tokens per window (a .pt2 program uses its traced length)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code from the model files to run (full pickles, Hugging Face custom code). Only for files you trust."),
    windows: int = typer.Option(24, help="ppl: number of windows (cosine: number of lines)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Regression gate for CI: exit 7 when PRUNED is worse than BASE beyond the tolerance."""
    check_data_file(data, "evaluation data (--data)")
    with progress_bar() as progress:
        task = progress.add_task(f"loading {base} and {pruned}", total=None)
        ref = load_model(base, seq_len=seq_len, trust_remote_code=trust_remote_code)
        cand = load_model(pruned, seq_len=seq_len, trust_remote_code=trust_remote_code)
        tokenizer = cand.tokenizer or ref.tokenizer
        if tokenizer is None and metric != "accuracy":
            raise ConfigError("neither model has a tokenizer; check needs one to read the evaluation text")
        progress.update(task, description=f"evaluating {metric}")
        # A .pt2 program has the static shapes it was traced with: feed it inputs of its length.
        traced_len = cand.args[0].shape[-1] if pruned.endswith(".pt2") else None
        if metric == "ppl":
            window = traced_len or seq_len
            ids = tokenize_file(data, tokenizer)
            base_value = perplexity(ref.model, ids, window, windows)
            pruned_value = perplexity(cand.model, ids, window, windows)
            ratio_value = pruned_value / base_value
            ok = ratio_value <= max_ratio
            limit = f"ratio <= {max_ratio}"
        elif metric == "cosine":
            lines = [l for l in data.read_text(encoding="utf-8").splitlines() if l.strip()][:windows]
            base_value = pruned_value = ratio_value = mean_embedding_cosine(ref.model, cand.model, tokenizer, lines,
                                                                            traced_len)
            ok = ratio_value >= min_cosine
            limit = f"cosine >= {min_cosine}"
        elif metric == "accuracy":
            # ... and batches of its traced size (token lengths only matter for text, i.e. JSONL).
            samples, labels = read_labelled(data, tokenizer, traced_len if data.suffix == ".jsonl" else None)
            batch = cand.args[0].shape[0] if traced_len is not None else 1
            base_value = accuracy(ref.model, samples, labels, batch)
            pruned_value = accuracy(cand.model, samples, labels, batch)
            ratio_value = base_value - pruned_value
            ok = ratio_value <= max_drop
            limit = f"drop <= {max_drop}"
        else:
            raise ConfigError(f"unknown metric '{metric}'; choose ppl, cosine or accuracy")
    result = {"metric": metric, "base": base_value, "pruned": pruned_value, "value": ratio_value,
              "limit": limit, "passed": ok}
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        table = Table(title=f"prunec check ({metric})")
        for col in ("base", "pruned", "drop" if metric == "accuracy" else "value", "limit", "verdict"):
            table.add_column(col)
        table.add_row(f"{base_value:.4g}", f"{pruned_value:.4g}", f"{ratio_value:.4g}", limit,
                      "[green]pass[/]" if ok else "[red]REGRESSED[/]")
        out.print(table)
    if not ok:
        raise RegressionError(f"{pruned} regressed: {metric} value {ratio_value:.4g} fails {limit}")
