"""The gate's generation metrics: what users feel, measured on greedy replies.

``qa``: accuracy of both models on questions with accepted answers, and *retention*, the share of
the base's correct answers the pruned model still gets.  ``rouge``: ROUGE-L F1 of generated
summaries against references, pruned/base.  ``agreement``: no labels; how often the pruned
model's greedy continuation matches the base's.
"""

from __future__ import annotations

from statistics import fmean
from types import MappingProxyType

from prunec.errors import ConfigError
from prunec.gate import CheckContext, Measurement
from prunec.greedy import Generation, check_fits, encode_prompt, greedy_generate, stop_ids
from prunec.task_data import read_documents, read_prompts, read_questions
from prunec.text_scores import answer_found, common_prefix, rouge_l, token_agreement

SUMMARY_PROMPT = "Summarize the following text in one sentence.\n\n{document}"


def generate_both(ctx: CheckContext, prompts: list[str]) -> tuple[list[Generation], list[Generation]]:
    """Greedy replies of the base and the pruned model to the same prompts (same encoding and stop ids)."""
    opts = ctx.options
    encoded = [encode_prompt(ctx.tokenizer, p, opts.chat_template) for p in prompts]
    # Refuse a static program before spending minutes on the other model's replies.
    check_fits(ctx.base.model, "the base model", encoded, opts.max_new_tokens)
    check_fits(ctx.pruned.model, ctx.pruned_spec, encoded, opts.max_new_tokens)
    stop = stop_ids(ctx.tokenizer, (ctx.base.model, ctx.pruned.model))
    base, pruned = ([greedy_generate(m.model, ctx.tokenizer, ids, opts.max_new_tokens, stop) for ids in encoded]
                    for m in (ctx.base, ctx.pruned))
    return base, pruned


def _first(items: list, ctx: CheckContext) -> list:
    return items[: ctx.options.limit] if ctx.options.limit else items


def measure_qa(ctx: CheckContext) -> Measurement:
    """Accuracy of base and pruned; value = retention of the base's correct answers."""
    questions = _first(read_questions(ctx.data), ctx)
    base, pruned = generate_both(ctx, [q.prompt for q in questions])
    base_ok = [answer_found(r.text, q.answers) for r, q in zip(base, questions)]
    pruned_ok = [answer_found(r.text, q.answers) for r, q in zip(pruned, questions)]
    if not any(base_ok):
        raise ConfigError(f"the base model answers none of the {len(questions)} questions in {ctx.data}, so retention "
                          "is undefined; give questions it answers (or more --max-new-tokens)")
    kept = sum(b and p for b, p in zip(base_ok, pruned_ok))
    lost = tuple(q.prompt for q, b, p in zip(questions, base_ok, pruned_ok) if b and not p)
    details = {"questions": len(questions), "base_correct": sum(base_ok), "pruned_correct": sum(pruned_ok),
               "kept": kept, "gained": sum(p and not b for b, p in zip(base_ok, pruned_ok)), "lost": lost}
    return Measurement(fmean(base_ok), fmean(pruned_ok), kept / sum(base_ok), MappingProxyType(details))


def measure_rouge(ctx: CheckContext) -> Measurement:
    """Mean ROUGE-L F1 of generated summaries against the references; value = pruned/base."""
    docs = _first(read_documents(ctx.data), ctx)
    base, pruned = generate_both(ctx, [SUMMARY_PROMPT.format(document=d.document) for d in docs])
    base_score = fmean(rouge_l(r.text, d.summary) for r, d in zip(base, docs))
    pruned_score = fmean(rouge_l(r.text, d.summary) for r, d in zip(pruned, docs))
    if base_score == 0:
        raise ConfigError(f"the base model's summaries share no words with the references in {ctx.data} (ROUGE-L 0), "
                          "so the ratio is undefined; check the data (ROUGE-L counts latin letters and digits)")
    return Measurement(base_score, pruned_score, pruned_score / base_score,
                       MappingProxyType({"documents": len(docs)}))


def measure_agreement(ctx: CheckContext) -> Measurement:
    """Token-level agreement of the pruned model's greedy continuations with the base's (value),
    with the exact-match rate, the matched prefix and ROUGE-L between the two as details."""
    prompts = _first(read_prompts(ctx.data), ctx)
    base, pruned = generate_both(ctx, prompts)
    pairs = list(zip(base, pruned))
    value = fmean(token_agreement(b.ids, p.ids) for b, p in pairs)
    details = {"prompts": len(pairs), "exact_match": fmean(b.ids == p.ids for b, p in pairs),
               "prefix": fmean(common_prefix(b.ids, p.ids) for b, p in pairs),
               "rougeL": fmean(1.0 if b.text == p.text else rouge_l(p.text, b.text) for b, p in pairs)}
    return Measurement(value, value, value, MappingProxyType(details))
