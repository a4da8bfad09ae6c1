"""The metrics of ``prunec check``, registered by name (:data:`METRICS`).

Each entry says what it measures, whether it needs a tokenizer, and its pass/fail rule (see
:mod:`prunec.gate`).  Adding a metric is one ``measure`` function and one registry entry.
"""

from __future__ import annotations

from prunec.evaluate import accuracy, mean_embedding_cosine, perplexity, read_labelled, tokenize_file
from prunec.gate import CheckContext, Measurement, Metric, Rule
from prunec.task_data import read_documents, read_prompts, read_questions
from prunec.task_metrics import measure_agreement, measure_qa, measure_rouge


def measure_ppl(ctx: CheckContext) -> Measurement:
    """Perplexity of both models on the same windows of the evaluation text; value = pruned/base."""
    # A .pt2 program has the static shapes it was traced with: feed it inputs of its length.
    window = ctx.traced_len or ctx.options.seq_len
    ids = tokenize_file(ctx.data, ctx.tokenizer)
    base = perplexity(ctx.base.model, ids, window, ctx.options.windows)
    pruned = perplexity(ctx.pruned.model, ids, window, ctx.options.windows)
    return Measurement(base, pruned, pruned / base)


def measure_cosine(ctx: CheckContext) -> Measurement:
    """Mean cosine between the two models' mean-pooled sentence embeddings, one line = one sentence."""
    lines = [l for l in ctx.data.read_text(encoding="utf-8").splitlines() if l.strip()][: ctx.options.windows]
    value = mean_embedding_cosine(ctx.base.model, ctx.pruned.model, ctx.tokenizer, lines, ctx.traced_len)
    return Measurement(value, value, value)


def measure_accuracy(ctx: CheckContext) -> Measurement:
    """Classifier accuracy of both models on labelled data; value = base - pruned (the drop)."""
    traced_len = ctx.traced_len
    # ... and batches of its traced size (token lengths only matter for text, i.e. JSONL).
    samples, labels = read_labelled(ctx.data, ctx.tokenizer, traced_len if ctx.data.suffix == ".jsonl" else None)
    batch = ctx.pruned.args[0].shape[0] if traced_len is not None else 1
    base = accuracy(ctx.base.model, samples, labels, batch)
    pruned = accuracy(ctx.pruned.model, samples, labels, batch)
    return Measurement(base, pruned, base - pruned)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("ppl", "language models: perplexity on --data text", measure_ppl,
           Rule("ratio", "max_ratio", higher_is_better=False)),
    Metric("cosine", "encoders: mean-pooled embeddings of --data lines", measure_cosine,
           Rule("cosine", "min_cosine", higher_is_better=True)),
    Metric("accuracy", "classifiers: --data JSONL {\"text\": ..., \"label\": INT} or .npz with 'labels'",
           measure_accuracy, Rule("drop", "max_drop", higher_is_better=False), needs_tokenizer=False),
    Metric("qa", "generation: --data JSONL {\"prompt\": ..., \"answers\": [...]}; retention of the base's correct "
           "answers", measure_qa, Rule("retention", "min_retention", higher_is_better=True), check_data=read_questions),
    Metric("rouge", "generation: --data JSONL {\"document\": ..., \"summary\": ...}; ROUGE-L of generated summaries, "
           "pruned/base", measure_rouge, Rule("ratio", "min_ratio", higher_is_better=True), check_data=read_documents),
    Metric("agreement", "generation: --data prompts, one a line; token agreement of greedy continuations",
           measure_agreement, Rule("agreement", "min_agreement", higher_is_better=True), check_data=read_prompts),
)}
