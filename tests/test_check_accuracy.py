"""`prunec check --metric accuracy`: labelled data formats, the gate's verdict and exit code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prunec
from models import ALL_CASES
from prunec.cli import app
from prunec.evaluate import accuracy, read_labelled

runner = CliRunner()


class WordTokenizer:
    """A stand-in tokenizer: one id per word."""

    def __call__(self, text, return_tensors="pt", padding=None, truncation=False, max_length=None):
        ids = [len(w) % 7 for w in text.split()]
        if max_length:
            ids = (ids + [0] * max_length)[:max_length]

        class Out:
            input_ids = torch.tensor([ids])

        return Out()


def _labelled_images(tmp_path, n: int = 9):
    model, _, _ = ALL_CASES["resnet"]()
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = model(images).logits.argmax(-1)
    np.savez(tmp_path / "eval.npz", images.numpy(), labels=labels.numpy())
    return tmp_path / "eval.npz", images, labels


def test_check_accuracy_passes_and_fails_on_the_measured_drop(tmp_path) -> None:
    data, images, labels = _labelled_images(tmp_path)
    out = tmp_path / "p"
    assert runner.invoke(app, ["prune", "models:resnet", "--ratio", "0.6", "-o", str(out)]).exit_code == 0
    program = torch.export.load(str(out / "model.pt2")).module()
    samples = [(images[i : i + 1],) for i in range(len(labels))]
    expected = accuracy(program, samples, labels, batch_size=2)  # padded last batch, as check does
    ok = runner.invoke(app, ["check", "models:resnet", str(out / "model.pt2"), "--data", str(data),
                             "--metric", "accuracy", "--max-drop", "1.0", "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["base"] == 1.0 and report["pruned"] == pytest.approx(expected) and report["passed"]
    assert expected < 1.0  # this much pruning of a random net changes some predictions
    bad = runner.invoke(app, ["check", "models:resnet", str(out / "model.pt2"), "--data", str(data),
                              "--metric", "accuracy", "--max-drop", "0.0"])
    assert bad.exit_code == 7 and "regressed" in bad.output


def test_jsonl_labelled_text(tmp_path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a bb ccc", "label": 1}\n\n{"text": "dddd", "label": 0}\n')
    samples, labels = read_labelled(path, WordTokenizer())
    assert labels.tolist() == [1, 0] and samples[0][0].tolist() == [[1, 2, 3]]
    fixed, _ = read_labelled(path, WordTokenizer(), fixed_len=4)
    assert fixed[1][0].shape == (1, 4)


@pytest.mark.parametrize("name,content,message", [
    ("a.jsonl", '{"text": "hi"}\n', "integer 'label'"),
    ("b.jsonl", '{"text": "hi", "label": "pos"}\n', "integer 'label'"),
    ("c.jsonl", "{nope\n", "not valid JSON"),
    ("d.txt", "hello\n", "must be .jsonl"),
    ("e.jsonl", "", "missing or empty"),
])
def test_bad_labelled_files(tmp_path, name, content, message) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(prunec.ConfigError, match=message):
        read_labelled(tmp_path / name, WordTokenizer())


def test_npz_without_labels_is_refused(tmp_path) -> None:
    np.savez(tmp_path / "x.npz", np.zeros((2, 3)))
    with pytest.raises(prunec.ConfigError, match="no 'labels' array"):
        read_labelled(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", np.zeros((2, 3)), labels=np.zeros(3))
    with pytest.raises(prunec.ConfigError, match="one row per label"):
        read_labelled(tmp_path / "y.npz")


def test_accuracy_on_a_language_model_is_refused_on_the_cli(tmp_path) -> None:
    np.savez(tmp_path / "x.npz", np.zeros((2, 8), dtype=np.int64), labels=np.zeros(2, dtype=np.int64))
    result = runner.invoke(app, ["check", "models:llama_gqa", "models:llama_gqa", "--data", str(tmp_path / "x.npz"),
                                 "--metric", "accuracy"])
    assert result.exit_code == 2 and "(batch, classes)" in result.output
