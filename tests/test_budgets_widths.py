"""FLOPs budgets (exact FLOP counts of plans), explicit target widths (--ffn/--heads), their errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import prunec
from models import ALL_CASES, randomize_
from prunec.budget import Budget, FlopCounter
from prunec.cli import app
from prunec.metrics import count_flops
from prunec.pipeline import parse_widths

runner = CliRunner()


@pytest.mark.parametrize("name,kinds", [
    ("llama_gqa", ("channels", "heads")),
    ("llama_gqa", ("channels", "heads", "residual")),
    ("bert", ("channels", "heads")),
    ("resnet", ("channels", "residual")),
])
def test_flop_counter_predicts_the_pruned_models_flops(name, kinds) -> None:
    model, args, kwargs = ALL_CASES[name]()
    randomize_(model)
    result = prunec.prune(model, args, kwargs, budget="flops=0.7", kinds=kinds)
    counter = FlopCounter(prunec.analyze(model, args, kwargs), args, kwargs)
    assert counter.full == count_flops(model, args, kwargs)
    actual = count_flops(result.module, args, kwargs)
    assert counter.count(result.removed) == actual
    assert 0.7 * counter.full <= actual < 0.8 * counter.full


def test_flops_budget_on_the_cli(tmp_path) -> None:
    out = tmp_path / "p"
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--budget", "flops=0.75", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert 0.75 <= s["flops_after"] / s["flops_before"] < 0.8
    assert s["hf_directory"] == "hf"


def test_ffn_and_heads_widths_end_to_end(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "p"
    result = runner.invoke(app, ["prune", "demo-llama", "--ffn", "256", "--heads", "4", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    config = AutoModelForCausalLM.from_pretrained(out / "hf").config
    assert (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads) == (256, 4, 2)
    assert config.hidden_size == 128  # only the named kinds are pruned


def test_width_aliases_merge_with_width() -> None:
    assert parse_widths(["channels=10"], heads=4) == (("channels", 10), ("heads", 4))
    assert parse_widths([], ffn=12) == (("channels", 12),)


@pytest.mark.parametrize("argv,message", [
    (["--budget", "flop=0.7"], "not METRIC=FRACTION"),
    (["--budget", "flops=1.5"], "not METRIC=FRACTION"),
    (["--budget", "params"], "not METRIC=FRACTION"),
    (["--ffn", "999"], "choose a width from 1 to 64"),
    (["--heads", "5"], "use a multiple of 2"),
    (["--heads", "0"], "at least 1 unit"),
    (["--width", "channels=x"], "is not KIND=UNITS"),
    (["--ffn", "10", "--width", "channels=12"], "contradicts"),
    (["--ffn", "32", "--budget", "params=0.8"], "not both"),
    (["--width", "filters=3"], "unknown kind"),
])
def test_bad_budgets_and_widths(tmp_path, argv, message) -> None:
    result = runner.invoke(app, ["prune", "models:llama_gqa", *argv, "-o", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_flops_budget_with_steps_is_refused(tmp_path) -> None:
    import numpy as np

    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"),
                                 "--budget", "flops=0.8", "--steps", "2", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "params budget" in result.output


def test_budget_parse() -> None:
    assert Budget.parse("flops=0.7") == Budget("flops", 0.7)
