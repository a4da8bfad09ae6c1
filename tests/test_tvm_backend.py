"""The TVM backend: compile for the host and for rpi4 (cross compiled, run under qemu), match PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import models
from prunec.errors import ConfigError, ToolchainError
from prunec.targets.backend import CompileOptions, get_backend
from prunec.targets.preset import load_preset

pytestmark = pytest.mark.tvm

pytest.importorskip("tvm", reason="the tvm backend needs apache-tvm: pip install 'prunec[tvm]'")

TOLERANCE = 1e-5


class TinyCNN(torch.nn.Module):
    """Conv-BN-ReLU, a residual conv, pooling and a linear head: the ops a pruned CNN lowers to."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.body = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.body(h))
        return self.head(h.mean((2, 3)))


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.export.ExportedProgram, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        program = torch.export.export(model, (x,), strict=False)
        reference = model(x).numpy()
    return program, x.numpy(), reference


@pytest.fixture(scope="module")
def host_build(tiny, tmp_path_factory) -> tuple[Path, dict]:
    program, x, _ = tiny
    out = tmp_path_factory.mktemp("x86")
    artifact = get_backend("tvm").compile(program, [x], load_preset("x86-64"), out, CompileOptions(tuning="dlight"))
    return out, {"threads": 2, "backend_details": artifact.details}


def _needs(*tools: str) -> None:
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        pytest.skip(f"{', '.join(absent)} not installed (apt-get install g++-aarch64-linux-gnu qemu-user)")


def test_host_build_runs_in_process_and_matches_pytorch(tiny, host_build) -> None:
    _, x, reference = tiny
    out, manifest = host_build
    assert (out / "model.so").is_file()
    details = manifest["backend_details"]
    assert details["tuning"] == "dlight" and details["scheduled_tasks"] == details["tasks"] > 0
    outputs = get_backend("tvm").runner(out, manifest, load_preset("x86-64"))([x])
    assert len(outputs) == 1 and outputs[0].shape == reference.shape
    assert np.abs(outputs[0] - reference).max() < TOLERANCE


def test_host_build_runs_in_the_native_cpp_runner(tiny, host_build) -> None:
    _needs("g++")
    from prunec.targets.tvm_runtime import native_runner

    _, x, reference = tiny
    out, _ = host_build
    outputs, times = native_runner(out / "model.so", threads=2).run([x], repeat=3)
    assert np.abs(outputs[0] - reference).max() < TOLERANCE
    assert len(times) == 3 and all(t > 0 for t in times)


def test_dlight_rule_parallelises_and_vectorises_convolutions(tiny) -> None:
    import tvm

    from prunec.targets import tvm_backend, tvm_tuning

    program, _, _ = tiny
    target = tvm.target.Target(tvm_backend.tvm_target(load_preset("x86-64")))
    fused = tvm_backend.legalize_and_fuse(tvm_backend.import_program(program), target)
    tvm_only = tvm_tuning.apply_dlight(fused, target, tvm_tuning.dlight_rules(with_prunec_rules=False))
    ours = tvm_tuning.apply_dlight(fused, target)
    convs = [g.name_hint for g, f in fused.functions_items() if g.name_hint.startswith("fused_conv2d")]
    assert len(convs) == 2
    for name in convs:
        text = ours[name].script()
        assert "T.parallel" in text and "T.vectorized" in text and 'scope="local"' in text, name
        assert 'scope="local"' not in tvm_only[name].script(), name  # TVM's rules have no register tile


def test_convolutions_are_lowered_channels_last_and_still_match(tiny, tmp_path) -> None:
    import tvm

    from prunec.targets import tvm_backend, tvm_tuning
    from prunec.targets.tvm_runtime import native_runner

    program, x, reference = tiny
    target = tvm.target.Target(tvm_backend.tvm_target(load_preset("x86-64")))
    nhwc = tvm_backend.legalize_and_fuse(tvm_backend.import_program(program), target)
    nchw = tvm_backend.legalize_and_fuse(tvm_backend.import_program(program), target, conv2d_layout=None)
    assert "conv2d_nhwc" in nhwc.script() and "conv2d_nchw" not in nhwc.script()
    assert "conv2d_nchw" in nchw.script()
    # The transposes at the boundaries give back NCHW: the library's output is PyTorch's.
    tvm_backend.export_library(tvm.compile(tvm_tuning.apply_dlight(nhwc, target), target=target),
                               load_preset("x86-64"), tmp_path / "model.so")
    outputs, _ = native_runner(tmp_path / "model.so", threads=2).run([x], repeat=1)
    assert outputs[0].shape == reference.shape
    assert np.abs(outputs[0] - reference).max() < TOLERANCE


def test_signature_names_inputs_and_outputs(tiny, tmp_path) -> None:
    program, x, reference = tiny
    artifact = get_backend("tvm").compile(program, [x], load_preset("x86-64"), tmp_path, CompileOptions(tuning="none"))
    assert [(s.name, s.shape, s.dtype) for s in artifact.inputs] == [("x", (1, 3, 16, 16), "float32")]
    assert [(s.shape, s.dtype) for s in artifact.outputs] == [(reference.shape, "float32")]
    assert artifact.details["tuning"] == "none" and artifact.files == ["model.so"]


@pytest.mark.cross
def test_rpi4_build_runs_under_qemu_and_matches_pytorch(tiny, tmp_path) -> None:
    _needs("aarch64-linux-gnu-g++", "qemu-aarch64")
    from prunec.targets.tvm_runtime import runtime_root

    try:
        runtime_root("aarch64")  # fetches the aarch64 wheels once (then cached)
    except ToolchainError as exc:
        pytest.skip(f"no aarch64 TVM runtime here: {exc}")
    program, x, reference = tiny
    backend, preset = get_backend("tvm"), load_preset("rpi4")
    assert backend.missing(preset) is None
    artifact = backend.compile(program, [x], preset, tmp_path, CompileOptions(tuning="dlight"))
    header = (tmp_path / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    assert "qemu-aarch64" in artifact.details["runs_on"]
    assert "tune this model there" in artifact.notes["untuned"] and "tvm-tuning/rpi4/" in artifact.notes["untuned"]
    outputs = backend.runner(tmp_path, {"threads": 1, "backend_details": artifact.details}, preset)([x])
    assert np.abs(outputs[0] - reference).max() < TOLERANCE


def test_missing_cross_compiler_is_named_with_its_package(tmp_path) -> None:
    from importlib import resources

    preset_text = (resources.files("prunec.targets") / "rpi4.toml").read_text()
    board = tmp_path / "board.toml"
    board.write_text(preset_text.replace('"aarch64-linux-gnu-g++"', '"aarch64-nonexistent-g++"'))
    reason = get_backend("tvm").missing(load_preset(board))
    assert reason == "aarch64-nonexistent-g++ is not installed (install aarch64-nonexistent-g++ and put it on PATH)"


def test_missing_emulator_names_the_debian_package(monkeypatch) -> None:
    import prunec.targets.tvm_backend as tvm_backend

    real_which = shutil.which
    monkeypatch.setattr(tvm_backend.shutil, "which", lambda tool: None if tool == "qemu-aarch64" else real_which(tool))
    reason = get_backend("tvm").missing(load_preset("rpi4"))
    if real_which("aarch64-linux-gnu-g++") is None:
        assert reason == "aarch64-linux-gnu-g++ is not installed (apt-get install g++-aarch64-linux-gnu)"
    else:
        assert reason == "qemu-aarch64 is not installed (apt-get install qemu-user)"


def test_architectures_without_a_runtime_wheel_are_built_not_refused(monkeypatch) -> None:
    # No riscv64 wheel exists, but the runtime is built from source on first use (test_tvm_cross_runtimes.py).
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")  # toolchain present
    monkeypatch.delenv("PRUNEC_TVM_RUNTIME_RISCV64", raising=False)
    assert get_backend("tvm").missing(load_preset("riscv64")) is None


def test_bad_options_are_refused(tiny, tmp_path) -> None:
    program, x, _ = tiny
    backend = get_backend("tvm")
    with pytest.raises(ConfigError, match="unknown tuning 'fast'"):
        backend.compile(program, [x], load_preset("x86-64"), tmp_path, CompileOptions(tuning="fast"))
    with pytest.raises(ConfigError, match="float models only"):
        backend.compile(program, [x], load_preset("x86-64"), tmp_path, CompileOptions(quantize="dynamic"))


def test_metaschedule_for_a_foreign_target_needs_the_device(tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRUNEC_CACHE_DIR", str(tmp_path / "cache"))
    program, x, _ = tiny
    with pytest.raises(ToolchainError, match="measures candidates on the device"):
        get_backend("tvm").compile(program, [x], load_preset("rpi4"), tmp_path, CompileOptions(tuning="metaschedule"))


@pytest.fixture(scope="module")
def host_tuned(tiny, tmp_path_factory) -> tuple[Path, Path, Any]:
    """The tiny CNN tuned for real on the host, one trial per task, records in a cache of its own."""
    for module in ("psutil", "cloudpickle"):
        pytest.importorskip(module, reason=f"MetaSchedule's local builder and runner need {module}")
    program, x, _ = tiny
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("tuned")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRUNEC_CACHE_DIR", str(cache))
        artifact = get_backend("tvm").compile(program, [x], load_preset("x86-64"), out,
                                              CompileOptions(tuning="metaschedule", tuning_trials=1))
    return cache, out, artifact


def _prepacked_schedule(program: torch.export.ExportedProgram, preset_name: str) -> tuple[Any, list[str]]:
    """What ``--tuning default`` schedules for ``preset_name`` from the cache, and its function names."""
    import tvm

    from prunec.targets import tvm_backend, tvm_tuning

    preset = load_preset(preset_name)
    target = tvm.target.Target(tvm_backend.tvm_target(preset))
    fused = tvm_backend.legalize_and_fuse(tvm_backend.import_program(program), target)
    scheduled = tvm_tuning.schedule(fused, target, preset, "default", 0)
    return scheduled, sorted(gv.name_hint for gv, _ in scheduled.module.functions_items())


def _assert_prepacked(names: list[str]) -> None:
    kernels = [n for n in names if n.startswith(("fused_conv2d", "fused_matmul"))]
    assert kernels and all(n.endswith("_prepacked") for n in kernels), names
    assert not [n for n in names if n.endswith("_weight_prepack")], "the reordering must fold into the constants"


@pytest.mark.slow
def test_metaschedule_tunes_prepacks_weights_and_matches_pytorch(tiny, host_tuned, monkeypatch) -> None:
    """One tuning trial per task on the host; the tuned kernels read weights reordered at compile time."""
    cache, out, artifact = host_tuned
    monkeypatch.setenv("PRUNEC_CACHE_DIR", str(cache))
    program, x, reference = tiny
    details = artifact.details
    assert details["tuning"] == "metaschedule" and details["tuned_tasks"] == details["tasks"] > 0
    outputs = get_backend("tvm").runner(out, {"threads": 2, "backend_details": details}, load_preset("x86-64"))([x])
    assert np.abs(outputs[0] - reference).max() < TOLERANCE

    # The cached records are picked up again (no tuning); every tuned kernel with a weight takes it prepacked.
    scheduled, names = _prepacked_schedule(program, "x86-64")
    assert scheduled.tuning == "metaschedule" and scheduled.seconds == 0.0
    _assert_prepacked(names)


@pytest.mark.slow
@pytest.mark.cross
def test_records_copied_for_a_foreign_target_are_prepacked_and_run_under_qemu(tiny, host_tuned, tmp_path,
                                                                              monkeypatch) -> None:
    """The path of records tuned on a device and copied into the cache: prepacking folds the weights
    on this host (constant folding evaluates on the host CPU), the library is cross compiled, and it
    still matches PyTorch under qemu. The host's records stand in for the device's here."""
    _needs("aarch64-linux-gnu-g++", "qemu-aarch64")
    from prunec.targets import tvm_runtime

    try:
        runtimes = tvm_runtime.runtime_root("aarch64").parents[1]  # fetched once into the user cache
    except ToolchainError as exc:
        pytest.skip(f"no aarch64 TVM runtime here: {exc}")
    cache, _, artifact = host_tuned
    monkeypatch.setenv("PRUNEC_CACHE_DIR", str(cache))
    if not (cache / "runtimes").exists():
        (cache / "runtimes").symlink_to(runtimes, target_is_directory=True)
    program, x, reference = tiny
    host_records = Path(artifact.details["tuning_records"])
    rpi4_records = cache / "tvm-tuning" / "rpi4" / host_records.name  # the tasks' TIR is target-independent
    shutil.copytree(host_records, rpi4_records)

    preset, backend = load_preset("rpi4"), get_backend("tvm")
    built = backend.compile(program, [x], preset, tmp_path, CompileOptions(tuning="default"))
    assert built.details["tuning"] == "metaschedule" and built.details["tuning_records"] == str(rpi4_records)
    assert built.details["tuned_tasks"] == built.details["tasks"] > 0 and "untuned" not in built.notes
    outputs = backend.runner(tmp_path, {"threads": 1, "backend_details": built.details}, preset)([x])
    assert np.abs(outputs[0] - reference).max() < TOLERANCE
    _assert_prepacked(_prepacked_schedule(program, "rpi4")[1])


def test_metaschedule_names_a_missing_helper_package(tiny, tmp_path, monkeypatch) -> None:
    from prunec.targets import tvm_tuning

    monkeypatch.setenv("PRUNEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tvm_tuning, "_has", lambda module: module != "cloudpickle")
    program, x, _ = tiny
    with pytest.raises(ToolchainError, match="MetaSchedule needs cloudpickle: pip install cloudpickle"):
        get_backend("tvm").compile(program, [x], load_preset("x86-64"), tmp_path, CompileOptions(tuning="metaschedule"))


def test_a_tvm_build_failure_is_a_clear_error(tiny, tmp_path, monkeypatch) -> None:
    import tvm

    def failing_compile(*_args, **_kwargs):
        raise tvm.error.InternalError("Check failed: (t.MatchesCode(DLDataTypeCode::kDLFloat)) is false:")

    monkeypatch.setattr(tvm, "compile", failing_compile)
    program, x, _ = tiny
    with pytest.raises(ToolchainError, match="TVM failed to build this model with --tuning dlight .*--backend onnx"):
        get_backend("tvm").compile(program, [x], load_preset("x86-64"), tmp_path, CompileOptions(tuning="dlight"))
    assert not (tmp_path / "model.so").exists()


class CountsPositives(torch.nn.Module):
    """Running counts over bool and int32 tensors: PyTorch accumulates both in int64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positives = torch.cumsum(x > 0, dim=-1)
        ranks = torch.cumsum((x < 0).to(torch.int32), dim=-1)
        return x * positives + ranks


class Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def _build_and_run(model: torch.nn.Module, x: torch.Tensor, out: Path) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        program = torch.export.export(model, (x,), strict=False)
        reference = model(x).numpy()
    preset, backend = load_preset("x86-64"), get_backend("tvm")
    artifact = backend.compile(program, [x.numpy()], preset, out, CompileOptions(tuning="dlight"))
    return backend.runner(out, {"threads": 2, "backend_details": artifact.details}, preset)([x.numpy()])[0], reference


def test_cumsum_over_bools_counts_like_pytorch(tmp_path) -> None:
    """TVM's importer kept bool as cumsum's dtype: wrong counts, and LLVM refused to add two i1 values."""
    x = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    output, reference = _build_and_run(CountsPositives().eval(), x, tmp_path)
    assert reference.max() > 2  # counts above 1: a bool accumulator would saturate
    assert np.abs(output - reference).max() < TOLERANCE


def test_llama_causal_lm_builds_and_matches_pytorch(tmp_path) -> None:
    """The LLaMA causal mask takes a cumsum over bools (packed-sequence detection); SmolLM2 is this architecture."""
    model, (ids,), _ = models.llama_gqa()
    output, reference = _build_and_run(Logits(models.randomize_(model)).eval(), ids, tmp_path)
    assert output.shape == reference.shape == (2, 8, 96)
    assert np.abs(output - reference).max() < 1e-4 * max(1.0, np.abs(reference).max())


def _tables(module: Any, shape: tuple[int, int]) -> int:
    """How many constants of ``shape`` or its transpose ``main`` of ``module`` holds."""
    from tvm import relax

    found: list[Any] = []

    @relax.expr_functor.visitor
    class _Constants(relax.PyExprVisitor):
        def visit_generic_const_(self, constant: Any) -> None:
            if tuple(constant.value.shape) in (shape, shape[::-1]) and not any(constant.same_as(c) for c in found):
                found.append(constant)

    _Constants().visit_expr(module["main"])
    return len(found)


@pytest.mark.slow
def test_a_tied_embedding_and_lm_head_share_one_table(tmp_path) -> None:
    """Constant folding used to store the LM head's transposed view of a tied table as a second table."""
    import tvm

    from prunec.targets import tvm_backend, tvm_tied_tables

    model, (ids,), _ = models.llama_tied()
    model = Logits(models.randomize_(model)).eval()
    with torch.no_grad():
        program = torch.export.export(model, (ids,), strict=False)
    imported = tvm_backend.import_program(program)
    vocab_by_hidden = (96, 48)
    assert len(tvm_tied_tables.tied_tables(imported)) == 1
    target = tvm.target.Target(tvm_backend.tvm_target(load_preset("x86-64")))
    assert _tables(tvm_backend.legalize_and_fuse(imported, target), vocab_by_hidden) == 1
    unshared = tvm_backend.legalize_and_fuse(imported, target, share_tied=False)
    assert _tables(unshared, vocab_by_hidden) == 2  # what the fix removes

    output, reference = _build_and_run(model, ids, tmp_path)
    assert np.abs(output - reference).max() < 1e-4 * max(1.0, np.abs(reference).max())
    untied, (ids,), _ = models.llama_gqa()
    with torch.no_grad():
        untied_program = torch.export.export(Logits(untied).eval(), (ids,), strict=False)
    assert tvm_tied_tables.tied_tables(tvm_backend.import_program(untied_program)) == []


def test_import_fixes_leave_a_correct_module_unchanged() -> None:
    import tvm

    from prunec.targets import tvm_import_fixes

    class AlreadyInt64(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, dim=0) + 1

    with torch.no_grad():
        program = torch.export.export(AlreadyInt64(), (torch.arange(6),), strict=False)
    from tvm.relax.frontend.torch import from_exported_program

    imported = from_exported_program(program)
    assert "R.cumsum" in imported["main"].script()
    tvm.ir.assert_structural_equal(tvm_import_fixes.fix_imported_module(imported), imported)


def test_runner_refuses_a_directory_without_the_library(tmp_path) -> None:
    with pytest.raises(ToolchainError, match="model.so is missing"):
        get_backend("tvm").runner(tmp_path, {"backend_details": {"runtime_file": "model.so"}}, load_preset("x86-64"))


def test_cli_compiles_and_runs_a_pruned_model(tmp_path) -> None:
    from typer.testing import CliRunner

    from prunec.cli import app
    from prunec.compile import load_runner

    cli, out = CliRunner(), tmp_path / "out"
    result = cli.invoke(app, ["compile", "models:resnet", "--target", "x86-64", "--backend", "tvm", "--ratio", "0.3",
                              "--tuning", "dlight", "--repeat", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend_details"]["tuning"] == "dlight" and manifest["verification"]["max_abs_diff"] < 1e-4
    # On a CPU that runs a wider preset (AVX-512 here), the report says so.
    from prunec.targets.preset import wider_host_presets

    wider = wider_host_presets(load_preset("x86-64"))
    assert ("wider_target" in manifest["notes"]) == bool(wider)
    if wider:
        assert f"--target {wider[0]}" in manifest["notes"]["wider_target"]
        assert f"--target {wider[0]}" in (out / "report.md").read_text()
    # Untuned kernels: the report says how to tune them.
    assert "--tuning metaschedule" in manifest["notes"]["untuned"]
    x = np.random.default_rng(0).standard_normal(manifest["inputs"][0]["shape"]).astype(np.float32)
    np.savez(tmp_path / "x.npz", x)
    result = cli.invoke(app, ["run", str(out), "--inputs", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    logits = np.load(tmp_path / "y.npz")[manifest["outputs"][0]["name"]]
    np.testing.assert_array_equal(logits, load_runner(out)[1]([x])[0])


def test_cli_refuses_armv7_without_its_cross_compiler_before_loading_the_model(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from prunec.cli import app

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "arm-linux-gnueabihf-g++" else real_which(tool))
    refused = CliRunner().invoke(app, ["compile", "models:resnet", "--target", "armv7", "--backend", "tvm",
                                       "-o", str(tmp_path / "arm")])
    assert refused.exit_code == 9
    assert "arm-linux-gnueabihf-g++ is not installed (apt-get install g++-arm-linux-gnueabihf)" in refused.output
    assert not (tmp_path / "arm").exists()


def test_host_needs_a_cxx_compiler(monkeypatch) -> None:
    monkeypatch.setenv("CXX", "nonexistent-cxx")
    assert get_backend("tvm").missing(load_preset("x86-64")) == \
        "nonexistent-cxx is not installed (install nonexistent-cxx and put it on PATH)"
