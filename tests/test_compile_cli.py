"""`prunec compile`, `run` and `bench`: manifest against the files, outputs against PyTorch, exit codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (pip install 'prunec[onnx]')")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

from models import ALL_CASES  # noqa: E402
from prunec.cli import app  # noqa: E402
from prunec.compile import CompileJob, compile_model  # noqa: E402
from prunec.errors import ToolchainError, VerificationError  # noqa: E402
from prunec.models import load_model  # noqa: E402
from prunec.pipeline import PruneJob  # noqa: E402
from prunec.targets.backend import register_backend  # noqa: E402
from prunec.targets.onnx_backend import OnnxBackend  # noqa: E402

runner = CliRunner()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("compile") / "resnet-rpi4"
    result = runner.invoke(app, ["compile", "models:resnet", "--target", "rpi4", "--ratio", "0.3", "--repeat", "5",
                                 "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_manifest_describes_the_files(compiled) -> None:
    out, printed = compiled
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == printed
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    for entry in manifest["files"]:
        path = out / entry["path"]
        assert entry["bytes"] == path.stat().st_size and entry["sha256"] == _sha256(path)
    assert (manifest["model"], manifest["target"], manifest["backend"]) == ("models:resnet", "rpi4", "onnx")
    assert manifest["inputs"] == [{"name": "pixel_values", "shape": [2, 3, 32, 32], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "logits", "shape": [2, 5], "dtype": "float32"}]
    assert manifest["params_after"] < manifest["params_before"]
    assert manifest["flops_after"] < manifest["flops_before"]
    assert manifest["notes"]["width_rounding"] == "kept channel/residual widths rounded to multiples of 4"
    assert 0 <= manifest["verification"]["max_abs_diff"] <= manifest["verification"]["tolerance"]
    assert manifest["latency"]["median_ms"] > 0 and manifest["latency"]["repeat"] == 5
    assert "portable" in manifest["latency"]["where"]
    assert "pixel_values" in (out / "report.md").read_text()


def test_run_matches_pytorch_and_bench_times_it(compiled, tmp_path) -> None:
    out, manifest = compiled
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))  # float64: converted within its kind
    np.savez(tmp_path / "x.npz", pixel_values=x)
    result = runner.invoke(app, ["run", str(out), "--inputs", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    got = np.load(tmp_path / "y.npz")["logits"]
    # The reference: the same pruning of the same model, in PyTorch.
    loaded = load_model("models:resnet")
    from prunec.pipeline import run_pruning

    pruned = run_pruning(loaded, PruneJob(ratio=0.3, round_to=4)).result.module  # rpi4's width multiple
    with torch.no_grad():
        want = pruned(torch.from_numpy(x).float()).logits.numpy()
    assert got.shape == (2, 5) and np.abs(got - want).max() < 1e-4
    np.savez(tmp_path / "pos.npz", x.astype(np.float32))  # positional arr_0
    result = runner.invoke(app, ["run", str(out), "--inputs", str(tmp_path / "pos.npz"), "--output", str(tmp_path / "z.npz")])
    assert result.exit_code == 0, result.output
    assert np.abs(np.load(tmp_path / "z.npz")["logits"] - got).max() < 1e-6
    result = runner.invoke(app, ["bench", str(out), "--repeat", "5", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["repeat"] == 5 and figures["min_ms"] <= figures["median_ms"] <= figures["max_ms"]


@pytest.mark.parametrize("arrays,message", [
    ({"images": np.zeros((2, 3, 32, 32), np.float32)}, "needs ['pixel_values']"),
    ({"pixel_values": np.zeros((1, 3, 32, 32), np.float32)}, "compiled for [2, 3, 32, 32]"),
    ({"pixel_values": np.zeros((2, 3, 32, 32), np.int64)}, "needs float32"),
])
def test_run_rejects_inputs_that_do_not_fit(compiled, tmp_path, arrays, message) -> None:
    out, _ = compiled
    np.savez(tmp_path / "bad.npz", **arrays)
    result = runner.invoke(app, ["run", str(out), "--inputs", str(tmp_path / "bad.npz"), "--output", str(tmp_path / "y.npz")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "y.npz").exists()


def test_compile_llm_for_mobile_with_int8(tmp_path) -> None:
    out = tmp_path / "llama"
    result = runner.invoke(app, ["compile", "models:llama_gqa", "--target", "android-arm64", "--quantize", "dynamic",
                                 "--repeat", "3", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert [f["path"] for f in manifest["files"]] == ["model.onnx", "model.ort"]
    assert manifest["backend_details"]["runtime_file"] == "model.ort" and manifest["quantize"] == "dynamic"
    assert manifest["inputs"] == [{"name": "input_ids", "shape": [2, 8], "dtype": "int64"}]
    assert 0 < manifest["verification"]["relative_l2_error"] < 0.1
    assert manifest["verification"]["metric"] == "relative_l2"


def test_verify_holds_float_to_max_abs_and_int8_to_relative_l2() -> None:
    from prunec.compile import verify

    reference = [np.linspace(-40, 40, 10_000, dtype=np.float32).reshape(100, 100)]
    spike = [reference[0].copy()]
    spike[0][0, 0] += 20.0  # one large outlier, tiny relative L2 error
    run = lambda arrays: spike  # noqa: E731
    with pytest.raises(VerificationError, match="max"):
        verify(run, [], reference, 1e-3, "max_abs")
    check = verify(run, [], reference, 0.25, "relative_l2")
    assert check["max_abs_diff"] == pytest.approx(20.0) and check["relative_l2_error"] < 0.02
    with pytest.raises(VerificationError, match="relative L2"):
        verify(run, [], reference, 1e-3, "relative_l2")


@pytest.mark.parametrize("argv,code,message", [
    (["--target", "pdp-11"], 8, "unknown target 'pdp-11'"),
    (["--target", "{tmp}/missing.toml"], 8, "not found"),
    (["--backend", "nope"], 2, "unknown backend 'nope'"),
    (["--quantize", "int4"], 2, "unknown --quantize"),
    (["--quantize", "static"], 2, "needs calibration data"),
])
def test_bad_compile_options_exit_before_writing(tmp_path, argv, code, message) -> None:
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = runner.invoke(app, ["compile", "models:residual_mlp", "-o", str(out), *argv])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not out.exists() and not list(tmp_path.glob(".out.*")), "no half-written output"


class Unavailable(OnnxBackend):
    name = "test-unavailable"

    def missing(self, preset):
        return "the test toolchain is not installed"


class OffByOne(OnnxBackend):
    """A lowering that changes the numbers: verification must catch it."""

    name = "test-off-by-one"

    def runner(self, out_dir, manifest, preset):
        run = super().runner(out_dir, manifest, preset)
        return lambda arrays: [y + 1.0 for y in run(arrays)]


@pytest.fixture
def test_backends(monkeypatch):
    """Register the two test backends for one test only (the registry is global)."""
    from prunec.targets import backend

    monkeypatch.setattr(backend, "_BACKENDS", dict(backend._BACKENDS))
    register_backend("test-unavailable")(Unavailable)
    register_backend("test-off-by-one")(OffByOne)


def test_missing_toolchain_exits_9(tmp_path, test_backends) -> None:
    result = runner.invoke(app, ["compile", "models:residual_mlp", "--backend", "test-unavailable", "-o", str(tmp_path / "o")])
    assert result.exit_code == ToolchainError.exit_code == 9
    assert "not installed" in result.output and not (tmp_path / "o").exists()


def test_verification_failure_exits_10_and_leaves_nothing(tmp_path, test_backends) -> None:
    out = tmp_path / "o"
    result = runner.invoke(app, ["compile", "models:residual_mlp", "--backend", "test-off-by-one", "-o", str(out)])
    assert result.exit_code == VerificationError.exit_code == 10, result.output
    assert "differs from PyTorch" in result.output
    assert not out.exists() and not list(tmp_path.glob(".o.*"))


def test_round_widths_keeps_multiples_of_the_target_width(tmp_path) -> None:
    from prunec.models import LoadedModel
    from prunec.prune import prune

    model, args, kwargs = ALL_CASES["resnet"]()
    plain = prune(model, args, kwargs, ratio=0.3)
    rounded = prune(model, args, kwargs, ratio=0.3, round_to=8)
    kept = {g.id: g.size - len(rounded.removed.get(g.id, ())) for g in rounded.analysis.groups}
    changed = [g for g in rounded.analysis.groups if g.id in plain.removed and g.kind in ("channels", "residual")
               and g.size > 8]
    assert changed and all(kept[g.id] % 8 == 0 for g in changed)
    assert any(len(plain.removed[g.id]) != len(rounded.removed.get(g.id, ())) for g in changed), "rounding did something"
    loaded = LoadedModel(model, args, kwargs, "resnet")
    job = CompileJob(target="rpi5", prune=PruneJob(ratio=0.3), round_widths=True, latency_repeat=0)
    manifest = compile_model(loaded, job, tmp_path / "o")
    assert manifest["notes"]["width_rounding"] == "kept channel/residual widths rounded to multiples of 8"
    assert manifest["params_after"] == rounded.params_after and manifest["latency"] is None


def test_run_and_bench_need_a_compiled_directory(tmp_path) -> None:
    for argv in (["run", str(tmp_path), "--inputs", "x.npz", "--output", "y.npz"], ["bench", str(tmp_path)]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2 and "has no manifest.json" in result.output
    (tmp_path / "manifest.json").write_text('{"format": 1}')
    result = runner.invoke(app, ["bench", str(tmp_path)])
    assert result.exit_code == 2 and "lacks backend" in result.output


def test_dump_ir_keeps_every_stage_and_the_stages_diff(tmp_path) -> None:
    dump = tmp_path / "ir"
    out = tmp_path / "out"
    result = runner.invoke(app, ["compile", "models:residual_mlp", "--ratio", "0.5", "--repeat", "0",
                                 "--dump-ir", str(dump), "-o", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in dump.iterdir())
    assert files == ["000_input.txt", "001_structured-removal.txt", "002_remove-noops.txt", "003_dce.txt"]
    traced, pruned = (dump / files[0]).read_text(), (dump / files[1]).read_text()
    assert traced != pruned  # pruning changed widths, and the printed IR shows it
    diff = runner.invoke(app, ["diff", str(dump / files[0]), str(dump / files[1]), "--summary"])
    assert diff.exit_code == 0, diff.output
    assert "changed" in diff.output
    # A non-empty dump directory is refused before anything is loaded or written.
    again = runner.invoke(app, ["compile", "models:residual_mlp", "--dump-ir", str(dump), "-o", str(tmp_path / "o2")])
    assert again.exit_code == 2 and "not empty" in again.output
    assert not (tmp_path / "o2").exists()
