"""Bad input on the command line: one line naming the problem and the fix, a distinct exit code,
no output directory.  (test_cli.py and test_errors.py hold the cases that existed before.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prunec
from prunec.cli import app
from prunec.errors import ConfigError, ModelLoadError, TraceError

runner = CliRunner()


def _fails_cleanly(tmp_path, argv: list[str], error: type[prunec.PruneError], message: str) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["-o", str(out)])
    assert result.exit_code == error.exit_code, result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists(), "a failed run left an output directory"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))], "temporary output left behind"


def _hf_dir(tmp_path, name: str = "hf"):
    from transformers import LlamaConfig, LlamaForCausalLM
    from models import DECODER

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**DECODER))
    path = tmp_path / name
    model.save_pretrained(path)
    return path


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", ["-0.1", "1.0", "1"])
def test_ratio_outside_unit_interval(tmp_path, ratio) -> None:
    _fails_cleanly(tmp_path, ["prune", "models:residual_mlp", "--ratio", ratio], ConfigError, "ratio must be in [0, 1)")


def test_width_that_would_empty_a_group(tmp_path) -> None:
    _fails_cleanly(tmp_path, ["prune", "models:residual_mlp", "--width", "channels=0"], ConfigError, "UNITS >= 1")


def test_budget_that_cannot_be_met(tmp_path) -> None:
    _fails_cleanly(tmp_path, ["prune", "models:residual_mlp", "--budget", "params=1.5"], ConfigError, "budget")


@pytest.mark.parametrize("option,value,message", [
    ("--kinds", "channels,filters", "unknown kind"),
    ("--importance", "taylor2", "unknown importance"),
    ("--allocation", "greedy", "unknown allocation"),
])
def test_unknown_names(tmp_path, option, value, message) -> None:
    _fails_cleanly(tmp_path, ["prune", "models:residual_mlp", option, value], ConfigError, message)


# --- model files -----------------------------------------------------------------------------

def test_missing_model_file(tmp_path) -> None:
    _fails_cleanly(tmp_path, ["prune", "{tmp}/nowhere/model.safetensors"], ModelLoadError, "not found")


def test_truncated_safetensors_in_a_hf_directory(tmp_path) -> None:
    path = _hf_dir(tmp_path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _fails_cleanly(tmp_path, ["prune", str(path)], ModelLoadError, "cannot load the model")


def test_truncated_single_safetensors_file(tmp_path) -> None:
    path = _hf_dir(tmp_path)
    weights = path / "model.safetensors"
    single = path / "weights.safetensors"
    single.write_bytes(weights.read_bytes()[:1000])
    weights.unlink()
    _fails_cleanly(tmp_path, ["prune", str(single)], ModelLoadError, "not a readable safetensors file")


def test_truncated_gguf(tmp_path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 20)
    _fails_cleanly(tmp_path, ["prune", str(gguf)], ModelLoadError, "cannot load GGUF file")


def test_empty_model_file(tmp_path) -> None:
    (tmp_path / "model.pt").write_bytes(b"")
    _fails_cleanly(tmp_path, ["prune", "{tmp}/model.pt"], ModelLoadError, "is empty")


def test_config_json_that_is_not_json(tmp_path) -> None:
    path = _hf_dir(tmp_path)
    (path / "config.json").write_text("{not json")
    _fails_cleanly(tmp_path, ["prune", str(path)], ModelLoadError, "config.json")


def test_config_json_of_an_unknown_architecture(tmp_path) -> None:
    path = _hf_dir(tmp_path)
    (path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    _fails_cleanly(tmp_path, ["prune", str(path)], ModelLoadError, "config.json")


def test_weights_that_do_not_fit_the_config(tmp_path) -> None:
    path = _hf_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 80  # the checkpoint holds 64
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").rename(path / "weights.safetensors")
    _fails_cleanly(tmp_path, ["prune", str(path / "weights.safetensors")], ModelLoadError, "does not fit its config.json")


# --- tracing ---------------------------------------------------------------------------------

def test_model_that_fails_to_trace(tmp_path) -> None:
    _fails_cleanly(tmp_path, ["prune", "test_cli:untraceable"], TraceError, "cannot trace DataDependent")


def wrong_shape():
    from models import ALL_CASES

    model, _, _ = ALL_CASES["residual_mlp"]()
    return model, (torch.randn(3, 7),)  # the model reads 12 features


def test_example_inputs_of_the_wrong_shape(tmp_path) -> None:
    _fails_cleanly(tmp_path, ["prune", "test_bad_input:wrong_shape"], TraceError, "fails on its example inputs")


def test_wrong_shape_python_api() -> None:
    model, args = wrong_shape()
    with pytest.raises(TraceError, match="cannot trace ResidualMLP.*pass example inputs that match the model"):
        prunec.prune(model, args)


# --- calibration data ------------------------------------------------------------------------

def test_empty_calibration_file(tmp_path) -> None:
    (tmp_path / "calib.txt").write_text("")
    _fails_cleanly(tmp_path, ["prune", "models:llama_gqa", "--calib", "{tmp}/calib.txt"], ConfigError, "is empty")


def test_calibration_with_no_samples(tmp_path) -> None:
    np.savez(tmp_path / "calib.npz", np.zeros((0, 8), dtype=np.int64))
    _fails_cleanly(tmp_path, ["prune", "models:llama_gqa", "--calib", "{tmp}/calib.npz"], ConfigError, "holds no samples")


def test_calibration_too_short_for_held_out_steps(tmp_path) -> None:
    np.savez(tmp_path / "calib.npz", np.zeros((1, 8), dtype=np.int64))
    _fails_cleanly(tmp_path, ["prune", "models:llama_gqa", "--calib", "{tmp}/calib.npz", "--budget", "params=0.8",
                              "--steps", "2"], ConfigError, "at least 2 samples")


def test_missing_calibration_file(tmp_path) -> None:
    _fails_cleanly(tmp_path, ["prune", "models:llama_gqa", "--calib", "{tmp}/none.npz"], ConfigError, "not found")


def test_exit_codes_are_distinct_across_the_hierarchy() -> None:
    classes = [c for c in vars(prunec.errors).values() if isinstance(c, type) and issubclass(c, prunec.PruneError)
               and c is not prunec.PruneError]
    codes = [c.exit_code for c in classes]
    assert len(classes) >= 10 and len(set(codes)) == len(codes), dict(zip(classes, codes))
    assert all(code not in (0, 1) for code in codes), "0 is success and 1 an unexpected crash"


# --- inputs are checked before the model loads ------------------------------------------------
# The model name does not exist: were it loaded first, the error would be a ModelLoadError.

@pytest.mark.parametrize("command", ["prune", "compile"])
@pytest.mark.parametrize("calib,message", [
    ("{tmp}/missing.txt", "not found; check the path"),
    ("{tmp}/empty.txt", "is empty"),
    ("{tmp}", "is not a file"),
])
def test_calibration_file_checked_before_loading(tmp_path, command, calib, message) -> None:
    (tmp_path / "empty.txt").write_text("")
    _fails_cleanly(tmp_path, [command, "models:no_such_model", "--calib", calib], ConfigError, message)


def test_recovery_data_checked_before_loading(tmp_path) -> None:
    (tmp_path / "calib.txt").write_text("hello " * 100)
    _fails_cleanly(tmp_path, ["prune", "models:no_such_model", "--calib", "{tmp}/calib.txt", "--recover",
                              "--recover-data", "{tmp}/nope.txt"], ConfigError, "recovery data (--recover-data)")


@pytest.mark.parametrize("command", ["prune", "compile"])
def test_output_under_a_file_is_refused_before_loading(tmp_path, command) -> None:
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, [command, "models:no_such_model", "-o", str(tmp_path / "file" / "out")])
    assert result.exit_code == ConfigError.exit_code, result.output
    assert "is not a directory" in result.output
