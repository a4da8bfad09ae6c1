"""The ONNX Runtime backend: export, offline optimisation, ORT format, int8, and its runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (pip install 'prunec[onnx]')")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

from models import ALL_CASES, randomize_  # noqa: E402
from prunec.errors import ToolchainError  # noqa: E402
from prunec.targets.backend import CompileOptions, get_backend, io_names  # noqa: E402
from prunec.targets.preset import load_preset  # noqa: E402


def _export(name: str) -> tuple[torch.export.ExportedProgram, list[np.ndarray], list[np.ndarray]]:
    model, args, kwargs = ALL_CASES[name]()
    randomize_(model)
    if hasattr(model, "config"):
        model.config.use_cache = False
    program = torch.export.export(model, args, kwargs, strict=False)
    with torch.no_grad():
        reference = program.module()(*args, **kwargs)
    flat = [t.numpy() for t in torch.utils._pytree.tree_leaves(reference)]
    return program, [a.numpy() for a in args], flat


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, y.relu()


def _compile(program, inputs, target: str, out: Path, **options):
    backend = get_backend("onnx")
    preset = load_preset(target)
    artifact = backend.compile(program, inputs, preset, out, CompileOptions(**options))
    runner = backend.runner(out, {"threads": 2, "backend_details": artifact.details}, preset)
    return artifact, runner


@pytest.fixture(scope="module")
def llama():
    return _export("llama_gqa")


def test_io_names_follow_the_model_signature(llama) -> None:
    program, _, _ = llama
    assert io_names(program) == (["input_ids"], ["logits"])
    tuple_program = torch.export.export(TwoOutputs(), (torch.randn(3, 6),), strict=False)
    assert io_names(tuple_program) == (["x"], ["output_0", "output_1"])


def test_float_artefact_matches_pytorch_for_a_foreign_target(tmp_path) -> None:
    program, inputs, reference = _export("resnet")
    artifact, runner = _compile(program, inputs, "rpi4", tmp_path)
    assert artifact.files == ["model.onnx"]
    assert [(s.name, s.shape, s.dtype) for s in artifact.inputs] == [("pixel_values", (2, 3, 32, 32), "float32")]
    assert [(s.name, s.shape) for s in artifact.outputs] == [("logits", (2, 5))]
    assert artifact.details["optimization_level"] == "extended"
    assert "portable" in artifact.details["runs_on"], "a foreign target says it was checked with the host ORT"
    outputs = runner(inputs)
    assert np.abs(outputs[0] - reference[0]).max() < 1e-4 * max(1.0, np.abs(reference[0]).max())


def test_mobile_preset_writes_the_ort_flatbuffer(tmp_path, llama) -> None:
    program, inputs, reference = llama
    artifact, runner = _compile(program, inputs, "android-arm64", tmp_path)
    assert artifact.files == ["model.onnx", "model.ort"]
    assert artifact.details["runtime_file"] == "model.ort"
    assert (tmp_path / "model.ort").read_bytes()[4:8] == b"ORTM", "an ORT-format flatbuffer"
    assert np.abs(runner(inputs)[0] - reference[0]).max() < 1e-3


def test_dynamic_int8_is_smaller_and_close(tmp_path, llama) -> None:
    program, inputs, reference = llama
    _compile(program, inputs, "rpi4", tmp_path / "float")
    artifact, runner = _compile(program, inputs, "rpi4", tmp_path / "int8", quantize="dynamic")
    float_size = (tmp_path / "float" / "model.onnx").stat().st_size
    int8_size = (tmp_path / "int8" / "model.onnx").stat().st_size
    assert int8_size < 0.6 * float_size
    got, want = runner(inputs)[0], reference[0]
    relative = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert 0 < relative < 0.1, "int8 changes the numbers, but only a little"


def test_static_int8_uses_calibration_batches(tmp_path) -> None:
    program, inputs, reference = _export("resnet")
    rng = np.random.default_rng(0)
    calibration = tuple((rng.standard_normal(inputs[0].shape).astype(np.float32),) for _ in range(4))
    artifact, runner = _compile(program, inputs, "x86-64", tmp_path, quantize="static", calibration=calibration)
    assert artifact.details["quantize"] == "static"
    got, want = runner(inputs)[0], reference[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.2


def test_static_int8_without_calibration_is_a_toolchain_error(tmp_path) -> None:
    program, inputs, _ = _export("residual_mlp")
    with pytest.raises(ToolchainError, match="calibration"):
        _compile(program, inputs, "x86-64", tmp_path, quantize="static")



@pytest.mark.parametrize(("threads", "cores", "passive"), [(2, 2, True), (0, 16, True), (4, 2, True), (2, 16, False)])
def test_runner_threads_wait_passively_when_they_take_every_core(monkeypatch, threads, cores, passive) -> None:
    from prunec.targets import onnx_backend

    monkeypatch.setattr(onnx_backend, "_usable_cores", lambda: cores)
    options = onnx_backend.runner_session_options(load_preset("x86-64"), threads)
    key = "session.intra_op.allow_spinning"
    if passive:
        assert options.get_session_config_entry(key) == "0"
    else:  # ORT's default (spinning) stays: the entry is not set at all
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry(key)
    assert options.intra_op_num_threads == threads
