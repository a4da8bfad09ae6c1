"""The ONNX Runtime backend: exported program -> ``model.onnx`` (and ``model.ort``), run with ORT.

Steps (each a named function below): export with the dynamo-based ``torch.onnx.export`` →
``onnx.checker`` → every weight stored once (tied embedding shared with the LM head,
:mod:`prunec.targets.onnx_weights`) → optional quantisation (``onnxruntime.quantization``:
weight-only ``MatMulNBits`` at 8 or 4 bits; int8 dynamic; or int8 static with calibration batches) →
offline graph optimisation at the preset's level, written with
``SessionOptions.optimized_model_filepath`` → the ORT flatbuffer for presets with ``ort_format``.

ONNX Runtime is portable: the artefact for an aarch64 or armv7 device is the same file as for the
host, so this backend verifies and times it with the ONNX Runtime installed here, and says so in
the manifest (``details["runs_on"]``). Level ``all`` may insert layout transformations that are
specific to the CPU the optimisation ran on, which is why only the host preset uses it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from prunec.errors import ConfigError, ToolchainError
from prunec.targets.backend import (ACTIVATION_MODES, Artifact, CompileOptions, Runner, TensorSpec, io_names,
                                    register_backend)
from prunec.targets.onnx_weights import WEIGHT_ONLY_MODES, quantize_weights, store_weights_once
from prunec.targets.preset import TargetPreset, host_arch

ONNX_FILE = "model.onnx"
ORT_FILE = "model.ort"
OPSET = 18
PER_CHANNEL = True  # int8 weights with one scale per output channel


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ToolchainError("the onnx backend needs ONNX Runtime: pip install 'prunec[onnx]'") from None
    return onnxruntime


def _level(preset: TargetPreset) -> Any:
    ort = _ort()
    return {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[preset.ort_optimization_level]


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter prints progress and warnings (torchvision missing, ...) that are not the user's business."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        registration.setLevel(level)


def export_onnx(program: torch.export.ExportedProgram, path: Path) -> None:
    """``torch.onnx.export(dynamo=True)`` of ``program`` with named inputs/outputs, then ``onnx.checker``."""
    import onnx

    inputs, outputs = io_names(program)
    try:
        with _quiet():
            onnx_program = torch.onnx.export(program, (), dynamo=True, input_names=inputs, output_names=outputs,
                                             opset_version=OPSET, verbose=False)
            onnx_program.save(str(path))
    except Exception as exc:  # noqa: BLE001 - exporter failures become one line naming the cause
        raise ToolchainError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}; "
                             f"try --backend tvm or report the unsupported op") from exc
    onnx.checker.check_model(str(path), full_check=True)


def quantize(src: Path, dst: Path, mode: str, calibration: Sequence[tuple[np.ndarray, ...]],
             input_names: Sequence[str]) -> None:
    """int8 with ``onnxruntime.quantization``: ``dynamic`` (weights int8, activations quantised at run
    time) or ``static`` (activation ranges from the calibration batches, QDQ format)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_name("prepared.onnx")
    with _quiet():
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    if mode == "dynamic":
        with _quiet():
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=PER_CHANNEL)
        return

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([dict(zip(input_names, batch)) for batch in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    with _quiet():
        quantize_static(str(prepared), str(dst), Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)


def optimize_offline(src: Path, dst: Path, preset: TargetPreset, ort_format: bool) -> None:
    """Let ONNX Runtime apply the preset's graph optimisations once and save the result (``.onnx``
    or, with ``ort_format``, the ORT flatbuffer the mobile runtime loads)."""
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = _level(preset)
    options.optimized_model_filepath = str(dst)
    # Level "all" warns that the saved file may hold host-specific layouts: that is why only the host
    # preset uses it (the manifest records the level).
    options.log_severity_level = 3
    if ort_format:
        options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    if not dst.is_file():
        raise ToolchainError(f"ONNX Runtime did not write {dst.name}; check the onnxruntime installation")


def _spec(value: Any) -> TensorSpec:
    import onnx

    tensor_type = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    return TensorSpec(value.name, shape, dtype)


def onnx_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (not initialisers) and outputs of an ONNX file, with static shapes and dtypes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initialisers = {t.name for t in model.graph.initializer}
    return ([_spec(v) for v in model.graph.input if v.name not in initialisers],
            [_spec(v) for v in model.graph.output])


@register_backend("onnx")
class OnnxBackend:
    """ONNX export + ONNX Runtime offline optimisation (+ int8, + ORT format for mobile presets)."""

    name = "onnx"

    def missing(self, preset: TargetPreset) -> str | None:
        for module, extra in (("onnx", "onnx"), ("onnxruntime", "onnx"), ("onnxscript", "onnx"), ("onnx_ir", "onnx")):
            try:
                __import__(module)
            except ImportError:
                return f"the onnx backend needs {module}: pip install 'prunec[{extra}]'"
        return None

    def compile(self, program: torch.export.ExportedProgram, example_inputs: Sequence[np.ndarray],
                preset: TargetPreset, out_dir: Path, options: CompileOptions) -> Artifact:
        ort = _ort()
        modes = ("none", *ACTIVATION_MODES, *WEIGHT_ONLY_MODES)
        if options.quantize not in modes:
            raise ConfigError(f"unknown quantisation '{options.quantize}'; choose one of {', '.join(modes)}")
        if options.quantize == "static" and not options.calibration:
            raise ToolchainError("static int8 quantisation needs calibration data: pass --calib FILE")
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="prunec-onnx-") as scratch:
            exported = Path(scratch) / "exported.onnx"
            export_onnx(program, exported)
            inputs, _ = onnx_signature(exported)
            # int8 dynamic/static quantise the exporter's two copies of a tied table separately (sharing
            # it first would leave a float copy for the embedding Gather), so they skip this step.
            ties = store_weights_once(exported) if options.quantize not in ACTIVATION_MODES else {}
            quantized = Path(scratch) / "quantized.onnx"
            if options.quantize in WEIGHT_ONLY_MODES:
                with _quiet():
                    quantize_weights(exported, quantized, WEIGHT_ONLY_MODES[options.quantize], ties)
                exported = quantized
            elif options.quantize in ACTIVATION_MODES:
                quantize(exported, quantized, options.quantize, options.calibration, [s.name for s in inputs])
                exported = quantized
            optimize_offline(exported, out_dir / ONNX_FILE, preset, ort_format=False)
            files = [ONNX_FILE]
            if preset.ort_format:
                optimize_offline(exported, out_dir / ORT_FILE, preset, ort_format=True)
                files.append(ORT_FILE)
        inputs, outputs = onnx_signature(out_dir / ONNX_FILE)
        runs_on = f"onnxruntime {ort.__version__} on this {host_arch()} host"
        if not preset.is_host:
            runs_on += f" (ONNX Runtime is portable: the same file runs on {preset.arch}; not timed on the device)"
        return Artifact(files=files, inputs=inputs, outputs=outputs, details={
            "runtime_file": ORT_FILE if preset.ort_format else ONNX_FILE,
            "opset": OPSET, "optimization_level": preset.ort_optimization_level,
            "ort_platform": preset.ort_platform, "quantize": options.quantize,
            "tied_tables_shared": len(ties),
            "onnxruntime": ort.__version__, "runs_on": runs_on})

    def runner(self, out_dir: Path, manifest: dict[str, Any], preset: TargetPreset) -> Runner:
        ort = _ort()
        details = manifest.get("backend_details", {})
        path = Path(out_dir) / details.get("runtime_file", ONNX_FILE)
        if not path.is_file():
            raise ToolchainError(f"{path} is missing; recompile with prunec compile")
        options = runner_session_options(preset, int(manifest.get("threads", 0)))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            return list(session.run(None, dict(zip(names, arrays))))

        return run


def runner_session_options(preset: TargetPreset, threads: int) -> Any:
    """ORT session options for running an artefact on this host with ``threads`` (0: ORT's choice)."""
    options = _ort().SessionOptions()
    options.graph_optimization_level = _level(preset)
    options.intra_op_num_threads = threads
    if threads:
        options.inter_op_num_threads = 1
    if not threads or threads >= _usable_cores():
        # ORT's workers spin between kernels by default. With a thread on every core, a spinning
        # worker takes the core that another worker or process needs: on a 2-vCPU host, 2 spinning
        # threads made ResNet-50 56.6 ms against 26.1 ms waiting passively (benchmarks/README.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
