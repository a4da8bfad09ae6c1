"""ONNX weight storage: tied weights stored once, weight-only quantisation (``--quantize int8-weights``,
``int4-weights``) compiles, runs in ONNX Runtime, verifies and shrinks the artefact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (pip install 'prunec[onnx]')")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
pytest.importorskip("onnx_ir", reason="weight storage rewrites use onnx-ir (installed with onnxscript)")

import onnx  # noqa: E402

from models import ALL_CASES, randomize_  # noqa: E402
from prunec.cli import app  # noqa: E402
from prunec.compile import CompileJob  # noqa: E402
from prunec.errors import ConfigError  # noqa: E402
from prunec.targets.backend import CompileOptions, get_backend  # noqa: E402
from prunec.targets.onnx_backend import export_onnx  # noqa: E402
from prunec.targets.onnx_weights import (WEIGHT_ONLY_MODES, WeightQuantization, quantize_weights,  # noqa: E402
                                         store_weights_once)
from prunec.targets.preset import load_preset  # noqa: E402

MODES = sorted(WEIGHT_ONLY_MODES)


class TiedProbe(nn.Module):
    """A tied embedding / LM head whose outputs expose both uses of the table: ``emb(ids)`` and
    ``head(eye)`` = the head's weight transposed, column v = embedding row v (``eye`` is 3-D so that
    the exporter writes a ``MatMul``, as for an LM head, rather than a 2-D ``Gemm``). Hidden width 40
    is not a multiple of either mode's block (K is padded to whole blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(70, 40)
        self.head = nn.Linear(40, 70, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor, eye: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.emb(ids), self.head(eye)


def _export(model: nn.Module, args: tuple) -> tuple[torch.export.ExportedProgram, list[np.ndarray], list[np.ndarray]]:
    program = torch.export.export(model, args, strict=False)
    with torch.no_grad():
        reference = program.module()(*args)
    return program, [a.numpy() for a in args], [t.numpy() for t in torch.utils._pytree.tree_leaves(reference)]


def _compile(program, inputs, target: str, out: Path, quantize: str = "none"):
    backend, preset = get_backend("onnx"), load_preset(target)
    artifact = backend.compile(program, inputs, preset, out, CompileOptions(quantize=quantize))
    runner = backend.runner(out, {"threads": 2, "backend_details": artifact.details}, preset)
    return artifact, runner


def _initializers(path: Path) -> list[onnx.TensorProto]:
    return list(onnx.load(str(path)).graph.initializer)


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def llama_tied():
    model, args, kwargs = ALL_CASES["llama_tied"]()
    randomize_(model)
    model.config.use_cache = False
    program = torch.export.export(model, args, kwargs, strict=False)
    with torch.no_grad():
        reference = program.module()(*args, **kwargs)
    params = sum(p.numel() for p in model.parameters())  # a tied table counts once
    return program, [a.numpy() for a in args], [t.numpy() for t in torch.utils._pytree.tree_leaves(reference)], params


@pytest.fixture(scope="module")
def llama_artefacts(tmp_path_factory, llama_tied):
    """``get(mode)``: llama_tied compiled for rpi4 with ``--quantize mode`` (compiled once per module)."""
    program, inputs, _, _ = llama_tied
    root, cache = tmp_path_factory.mktemp("llama-tied"), {}

    def get(mode: str):
        if mode not in cache:
            cache[mode] = (root / mode, *_compile(program, inputs, "rpi4", root / mode, quantize=mode))
        return cache[mode]

    return get


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(0)
    ids = torch.tensor([[0, 5, 69, 33], [12, 12, 1, 68]])
    return _export(TiedProbe().eval(), (ids, torch.eye(40)[None]))


def test_float_artefact_stores_a_tied_embedding_once(llama_tied, llama_artefacts) -> None:
    _, inputs, reference, params = llama_tied
    out, artifact, runner = llama_artefacts("none")
    assert artifact.details["tied_tables_shared"] == 1
    tables = [t for t in _initializers(out / "model.onnx") if sorted(t.dims) == [48, 96]]
    assert len(tables) == 1, "the 96 x 48 table once, not also as the LM head's transposed copy"
    float_bytes = sum(np.prod(t.dims, dtype=np.int64) * 4 for t in _initializers(out / "model.onnx")
                      if t.data_type == onnx.TensorProto.FLOAT)
    assert params * 4 <= float_bytes < params * 4 * 1.01, "float weights stored: parameters x 4 bytes"
    assert np.abs(runner(inputs)[0] - reference[0]).max() < 1e-4 * max(1.0, np.abs(reference[0]).max())


def test_untied_tables_are_left_alone(tmp_path) -> None:
    model, args, kwargs = ALL_CASES["llama_gqa"]()
    randomize_(model)
    model.config.use_cache = False
    program = torch.export.export(model, args, kwargs, strict=False)
    artifact, _ = _compile(program, [a.numpy() for a in args], "rpi4", tmp_path)
    assert artifact.details["tied_tables_shared"] == 0
    assert len([t for t in _initializers(tmp_path / "model.onnx") if sorted(t.dims) == [48, 96]]) == 2


@pytest.mark.parametrize("mode", MODES)
def test_weight_only_mode_is_smaller_and_verifies(llama_tied, llama_artefacts, mode) -> None:
    _, inputs, reference, _ = llama_tied
    out, artifact, runner = llama_artefacts(mode)
    assert artifact.details["quantize"] == mode
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "MatMulNBits" in ops and "DynamicQuantizeLinear" not in ops, "weights quantised, activations float"
    bits = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
    scheme = WEIGHT_ONLY_MODES[mode]
    assert bits == {scheme.bits, scheme.tied_bits or scheme.bits}, "the tied LM head at tied_bits, the rest at bits"
    big_float = [t.name for t in model.graph.initializer
                 if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) >= 48 * 48]
    assert big_float == [], "no float weight matrix (the tied table included) is left"
    assert (out / "model.onnx").stat().st_size < (llama_artefacts("none")[0] / "model.onnx").stat().st_size
    error = _relative(runner(inputs)[0], reference[0])
    assert 0 < error < CompileJob(quantize=mode).effective_tolerance


def test_four_bits_are_smaller_than_eight(llama_artefacts) -> None:
    sizes = {mode: sum(len(t.raw_data) for t in _initializers(llama_artefacts(mode)[0] / "model.onnx"))
             for mode in MODES}
    assert sizes["int4-weights"] < 0.8 * sizes["int8-weights"]


@pytest.mark.parametrize("mode", MODES)
def test_quantised_embedding_reads_the_lm_head_weights(tmp_path, probe, mode) -> None:
    """Embedding row v of the artefact == column v of its LM head's (dequantised) weight: one stored
    table, unpacked (nibble order, zero points, scales, block padding) the way MatMulNBits reads it."""
    program, inputs, reference = probe
    artifact, runner = _compile(program, inputs, "x86-64", tmp_path, quantize=mode)
    assert artifact.details["tied_tables_shared"] == 1
    rows, head = runner(inputs)
    ids = inputs[0]
    np.testing.assert_allclose(rows, head[0].T[ids], rtol=1e-5, atol=1e-6)
    assert 0 < _relative(rows, reference[0]) < (0.02 if WEIGHT_ONLY_MODES[mode].bits == 8 else 0.2)


def test_ort_format_for_mobile_carries_matmulnbits(tmp_path, llama_tied) -> None:
    program, inputs, reference, _ = llama_tied
    artifact, runner = _compile(program, inputs, "android-arm64", tmp_path, quantize="int8-weights")
    assert artifact.details["runtime_file"] == "model.ort"
    assert _relative(runner(inputs)[0], reference[0]) < CompileJob(quantize="int8-weights").effective_tolerance


def test_unknown_mode_is_a_config_error(tmp_path, probe) -> None:
    program, inputs, _ = probe
    with pytest.raises(ConfigError, match="int4-weights"):
        _compile(program, inputs, "x86-64", tmp_path, quantize="int3-weights")


@pytest.mark.slow
def test_cli_compiles_int4_weights_and_rejects_a_bad_mode(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "llama"
    result = runner.invoke(app, ["compile", "models:llama_tied", "--target", "rpi4", "--quantize", "int4-weights",
                                 "--ratio", "0.25", "--repeat", "0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["quantize"] == "int4-weights" and manifest["verification"]["metric"] == "relative_l2"
    assert manifest["verification"]["tolerance"] == CompileJob(quantize="int4-weights").effective_tolerance
    bad = runner.invoke(app, ["compile", "models:llama_tied", "--quantize", "int3-weights", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert "unknown --quantize 'int3-weights'" in bad.output and "int8-weights" in bad.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("scheme", [WeightQuantization(bits=4, block_size=32, algorithm="hqq"),
                                    WeightQuantization(bits=8, block_size=16, symmetric=True)],
                         ids=["hqq-float-zero-points", "symmetric-8bit"])
def test_embedding_rows_follow_other_weight_layouts(tmp_path, probe, scheme) -> None:
    """The same identity for layouts no built-in mode produces for a tied head: HQQ's float zero
    points in flat per-block arrays, and symmetric weights (no zero points: 2^(bits-1) implied)."""
    import onnxruntime as ort

    program, inputs, reference = probe
    exported, quantized = tmp_path / "exported.onnx", tmp_path / "quantized.onnx"
    export_onnx(program, exported)
    ties = store_weights_once(exported)
    assert len(ties) == 1
    quantize_weights(exported, quantized, scheme, ties)
    model = onnx.load(str(quantized))
    assert [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and
            np.prod(i.dims) >= 40 * 70] == [], "the float table is gone"
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    rows, head = session.run(None, dict(zip([i.name for i in session.get_inputs()], inputs)))
    np.testing.assert_allclose(rows, head[0].T[inputs[0]], rtol=1e-5, atol=1e-6)
    assert 0 < _relative(rows, reference[0]) < 0.2


@pytest.mark.parametrize("fields,message", [({"bits": 3, "block_size": 32}, "4 or 8 bits"),
                                            ({"bits": 4, "block_size": 48}, "power of two"),
                                            ({"bits": 4, "block_size": 32, "algorithm": "gptq"}, "rtn or hqq")])
def test_bad_weight_scheme_is_a_config_error(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        WeightQuantization(**fields)


def test_a_registered_scheme_is_a_quantize_mode(monkeypatch) -> None:
    monkeypatch.setitem(WEIGHT_ONLY_MODES, "int4-blocks-64", WeightQuantization(bits=4, block_size=64))
    assert CompileJob(quantize="int4-blocks-64").resolved().effective_tolerance == 0.5
    monkeypatch.delitem(WEIGHT_ONLY_MODES, "int4-blocks-64")
    with pytest.raises(ConfigError, match="unknown --quantize 'int4-blocks-64'"):
        CompileJob(quantize="int4-blocks-64").resolved()
