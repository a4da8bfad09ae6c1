"""`prunec check --metric qa|rouge|agreement`: greedy replies of base and pruned, scored.

Random tiny models answer nothing, so the data is built from the base model's own replies: the
base then scores 1.0 against itself, and a copy with perturbed weights must score lower.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import prunec
from models import DECODER
from prunec.cli import app
from prunec.greedy import encode_prompt, greedy_generate, static_shape, stop_ids
from prunec.models import load_model
from prunec.task_metrics import SUMMARY_PROMPT
from prunec.task_data import read_documents, read_prompts, read_questions
from prunec.text_scores import answer_found, common_prefix, rouge_l, token_agreement

runner = CliRunner()
PROMPTS = ["w3 w4 w5", "w10 w11", "w20 w21 w22 w23", "w40", "w50 w51 w52", "w60 w61 w62 w63 w64"]


def _tokenizer():
    from tokenizers import Tokenizer, models as tk_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[EOS]"] + [f"w{i}" for i in range(94)])}
    tok = Tokenizer(tk_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A tiny random LLaMA with a word-level tokenizer, and a copy with noisy weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**DECODER, eos_token_id=1, bos_token_id=None, pad_token_id=None)).eval()
    tokenizer = _tokenizer()
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * p.std() * torch.randn(p.shape, generator=gen))
    model.save_pretrained(root / "noisy")
    tokenizer.save_pretrained(root / "noisy")
    return root


def _base_replies(dirs, prompts=PROMPTS, max_new_tokens=8) -> list[str]:
    loaded = load_model(str(dirs / "base"))
    stop = stop_ids(loaded.tokenizer, [loaded.model])
    return [greedy_generate(loaded.model, loaded.tokenizer, encode_prompt(loaded.tokenizer, p), max_new_tokens,
                            stop).text for p in prompts]


def _check(*args):
    result = runner.invoke(app, ["check", *map(str, args), "--max-new-tokens", "8", "--json"])
    return result, (json.loads(result.stdout) if result.exit_code in (0, 7) else None)


# --- scoring on fixed strings --------------------------------------------------------------------

@pytest.mark.parametrize("reply,answers,found", [
    ("The capital of France is  PARIS.", ["Paris"], True),
    ("It is\nCarbon   Dioxide, mostly", ["carbon dioxide"], True),
    ("The answer is 14.", ["4"], False),  # a whole word, not a substring of one
    ("Parisian cafes", ["Paris"], False),
    ("I don't know.", ["Paris", "Lyon"], False),
    ("Water is H2O", ["h2o"], True),
])
def test_answer_matching(reply, answers, found) -> None:
    assert answer_found(reply, answers) is found


def test_token_scores() -> None:
    assert token_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.75
    assert token_agreement([1, 2], [1, 2, 3, 4]) == 0.5  # a shorter continuation misses the rest
    assert token_agreement([], []) == 1.0
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("dogs bark", "the cat sat") == 0.0
    assert 0 < rouge_l("a cat sat on a mat", "the cat sat on the mat") < 1


def test_chat_template_is_used_when_the_tokenizer_has_one() -> None:
    tok = _tokenizer()
    plain = encode_prompt(tok, "w5 w6")
    tok.chat_template = "{% for m in messages %}w1 {{ m['content'] }} w2{% endfor %}{% if add_generation_prompt %} w3{% endif %}"
    ids = [tok.convert_tokens_to_ids(w) for w in ("w1", "w5", "w6", "w2", "w3")]
    assert encode_prompt(tok, "w5 w6") == ids
    assert encode_prompt(tok, "w5 w6", chat_template=False) == plain == ids[1:3]


# --- the gate on tiny models ---------------------------------------------------------------------

def test_qa_retention_of_itself_and_of_a_perturbed_model(dirs, tmp_path) -> None:
    replies = _base_replies(dirs)
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answers": [r]}) + "\n" for p, r in zip(PROMPTS, replies) if r))
    result, same = _check(dirs / "base", dirs / "base", "--data", data, "--metric", "qa", "--min-retention", "1")
    assert result.exit_code == 0, result.output
    assert same["base"] == same["pruned"] == same["value"] == 1.0
    assert same["details"]["base_correct"] == same["details"]["kept"] == len(data.read_text().splitlines())
    result, noisy = _check(dirs / "base", dirs / "noisy", "--data", data, "--metric", "qa", "--min-retention", "1")
    assert result.exit_code == 7, result.output
    assert noisy["base"] == 1.0 and noisy["value"] < 1.0 and noisy["value"] == noisy["pruned"]
    assert noisy["details"]["lost"]  # the questions it lost are listed


def test_qa_that_the_base_cannot_answer_is_refused(dirs, tmp_path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"prompt": "w3 w4", "answers": ["zebra"]}) + "\n")
    result = runner.invoke(app, ["check", str(dirs / "base"), str(dirs / "base"), "--data", str(data),
                                 "--metric", "qa", "--max-new-tokens", "4"])
    assert result.exit_code == 2 and "answers none of the 1 questions" in result.output


def test_rouge_of_itself_and_of_a_perturbed_model(dirs, tmp_path) -> None:
    # The references are the base's own summaries, so the base scores ROUGE-L 1.
    replies = _base_replies(dirs, [SUMMARY_PROMPT.format(document=p) for p in PROMPTS])
    data = tmp_path / "sum.jsonl"
    data.write_text("".join(json.dumps({"document": p, "summary": r}) + "\n" for p, r in zip(PROMPTS, replies) if r))
    result, same = _check(dirs / "base", dirs / "base", "--data", data, "--metric", "rouge", "--min-ratio", "1")
    assert result.exit_code == 0, result.output
    assert same["base"] == same["pruned"] == same["value"] == 1.0
    result, noisy = _check(dirs / "base", dirs / "noisy", "--data", data, "--metric", "rouge", "--min-ratio", "1")
    assert result.exit_code == 7, result.output
    assert noisy["base"] == 1.0 and noisy["value"] == noisy["pruned"] < 1.0


def test_agreement_of_itself_and_of_a_perturbed_model(dirs, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    result, same = _check(dirs / "base", dirs / "base", "--data", prompts, "--metric", "agreement",
                          "--min-agreement", "1")
    assert result.exit_code == 0, result.output
    assert same["value"] == 1.0 and same["details"] == {"prompts": len(PROMPTS), "exact_match": 1.0, "prefix": 1.0,
                                                        "rougeL": 1.0}
    result, noisy = _check(dirs / "base", dirs / "noisy", "--data", prompts, "--metric", "agreement",
                           "--min-agreement", "1")
    assert result.exit_code == 7, result.output
    assert noisy["value"] < 1.0 and noisy["details"]["exact_match"] < 1.0


def test_static_program_is_padded_to_its_traced_length_or_refused(dirs, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    static = tmp_path / "static"
    assert runner.invoke(app, ["prune", str(dirs / "base"), "--ratio", "0", "--static-shapes", "--seq-len", "24",
                               "-o", str(static)]).exit_code == 0
    assert static_shape(load_model(str(static / "model.pt2")).model) == (1, 24)
    # ratio 0 is the identity: the padded, uncached program continues exactly as the cached base does.
    result, same = _check(dirs / "base", static / "model.pt2", "--data", prompts, "--metric", "agreement")
    assert result.exit_code == 0, result.output
    assert same["value"] == 1.0
    too_long = runner.invoke(app, ["check", str(dirs / "base"), str(static / "model.pt2"), "--data", str(prompts),
                                   "--metric", "agreement", "--max-new-tokens", "40"])
    assert too_long.exit_code == 2 and "static length of 24 tokens" in too_long.output


def test_dynamic_program_generates_as_its_hf_directory(dirs, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    dynamic = tmp_path / "dynamic"
    assert runner.invoke(app, ["prune", str(dirs / "base"), "--ratio", "0.5", "-o", str(dynamic)]).exit_code == 0
    assert static_shape(load_model(str(dynamic / "model.pt2")).model) == (None, None)
    result, pruned = _check(dynamic / "hf", dynamic / "model.pt2", "--data", prompts, "--metric", "agreement")
    assert result.exit_code == 0, result.output
    assert pruned["value"] == 1.0  # the same pruned model, cached (hf/) and re-run (.pt2)


# --- bad data ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader,name,content,message", [
    (read_questions, "q.jsonl", '{"prompt": "hi"}\n', "non-empty list 'answers'"),
    (read_questions, "q.jsonl", '{"prompt": "hi", "answers": []}\n', "non-empty list 'answers'"),
    (read_questions, "q.jsonl", '{"prompt": "hi", "answers": "Paris"}\n', "non-empty list 'answers'"),
    (read_questions, "q.txt", "What is 2+2?\n", "must be JSONL"),
    (read_questions, "q.jsonl", "\n\n", "holds no questions"),
    (read_questions, "q.jsonl", "{bad\n", "not valid JSON"),
    (read_documents, "s.jsonl", '{"document": "text"}\n', "'document' and 'summary'"),
    (read_prompts, "p.txt", "  \n\n", "holds no prompts"),
    (read_prompts, "p.jsonl", '{"text": "hi"}\n', "needs a string 'prompt'"),
])
def test_bad_task_data(tmp_path, reader, name, content, message) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(prunec.ConfigError, match=message):
        reader(tmp_path / name)


def test_bad_task_data_is_one_line_on_the_cli(dirs, tmp_path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"prompt": "w3", "answers": []}\n')
    result = runner.invoke(app, ["check", str(dirs / "base"), str(dirs / "base"), "--data", str(data), "--metric", "qa"])
    assert result.exit_code == 2 and "qa.jsonl:1 needs" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_metric_lists_the_registry(tmp_path) -> None:
    (tmp_path / "x.txt").write_text("hello\n")
    result = runner.invoke(app, ["check", "a", "b", "--data", str(tmp_path / "x.txt"), "--metric", "bleu"])
    assert result.exit_code == 2 and "ppl, cosine, accuracy, qa, rouge, agreement" in result.output
