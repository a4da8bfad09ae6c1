"""TVM runtimes built from source for armv7 and riscv64 (no wheels), artefacts verified under qemu.

The first run on a machine builds both runtimes into the user cache (measured on the shared 2-core
machine: 108 s for armv7 including the sdist download, 93 s for riscv64; docs/tvm.md); later runs
reuse them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from prunec.errors import ToolchainError
from prunec.targets.backend import CompileOptions, get_backend
from prunec.targets.preset import load_preset

pytestmark = [pytest.mark.tvm, pytest.mark.cross, pytest.mark.slow]

pytest.importorskip("tvm", reason="the tvm backend needs apache-tvm: pip install 'prunec[tvm]'")

# arch -> (preset, ELF e_machine, ELF class byte: 1 = 32-bit, 2 = 64-bit)
CROSS = {"armv7": ("armv7", 40, 1), "riscv64": ("riscv64", 243, 2)}
# arch -> (offset of e_flags in the ELF header, the float-ABI bit the cross toolchain's libraries have):
# EF_ARM_ABI_FLOAT_HARD and EF_RISCV_FLOAT_ABI_DOUBLE, what the presets' float_abi / abi ask LLVM for.
FLOAT_ABI_FLAG = {"armv7": (0x24, 0x400), "riscv64": (0x30, 0x4)}
# float32 end to end: same ops as PyTorch, only summation order and FMA contraction differ (measured
# ~2e-7 on this model); 1e-5 still catches a wrong kernel, layout or weight by orders of magnitude.
TOLERANCE = 1e-5


class SmallCNN(torch.nn.Module):
    """Conv-BN-ReLU, a depthwise conv, a residual add, pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.depthwise(h))
        return self.head(h.mean((2, 3)))


def _needs_toolchain(arch: str) -> None:
    preset = load_preset(CROSS[arch][0])
    absent = [t for t in (preset.cross_compiler, preset.emulator) if shutil.which(t) is None]
    if absent:
        pytest.skip(f"{', '.join(absent)} not installed (scripts/system-deps.sh installs the cross compilers and "
                    f"qemu-user)")


@pytest.fixture(scope="module")
def program() -> tuple[torch.export.ExportedProgram, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exported = torch.export.export(model, (x,), strict=False)
        reference = model(x).numpy()
    return exported, x.numpy(), reference


@pytest.fixture(scope="module", params=sorted(CROSS))
def runtime(request) -> tuple[str, Path]:
    """The arch and its runtime folder, built once per machine into the user cache (then reused)."""
    from prunec.targets.tvm_runtime import runtime_root

    arch = request.param
    _needs_toolchain(arch)
    return arch, runtime_root(arch, load_preset(CROSS[arch][0]).cross_compiler)


def test_built_runtime_has_the_layout_and_targets_the_arch(runtime) -> None:
    arch, root = runtime
    _, machine, elf_class = CROSS[arch]
    marker = json.loads((root / ".complete").read_text())
    assert marker["arch"] == arch and marker["apache-tvm"] == importlib.metadata.version("apache-tvm")
    for library in (root / "tvm" / "lib" / "libtvm_runtime.so", root / "tvm_ffi" / "lib" / "libtvm_ffi.so"):
        header = library.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and header[4] == elf_class, library
        assert int.from_bytes(header[18:20], "little") == machine, library
        assert marker["sizes"][library.name] == library.stat().st_size
    assert (root / "tvm_ffi" / "include" / "tvm" / "ffi" / "function.h").is_file()
    assert (root / "tvm_ffi" / "include" / "dlpack" / "dlpack.h").is_file()


def test_built_runtime_is_reused(runtime, capfd) -> None:
    from prunec.targets.tvm_runtime import runtime_root

    arch, root = runtime
    stamp = (root / "tvm" / "lib" / "libtvm_runtime.so").stat().st_mtime_ns
    assert runtime_root(arch) == root
    assert "building the TVM runtime" not in capfd.readouterr().err
    assert (root / "tvm" / "lib" / "libtvm_runtime.so").stat().st_mtime_ns == stamp


def test_artefact_runs_under_qemu_and_matches_pytorch(runtime, program, tmp_path) -> None:
    arch, _ = runtime
    exported, x, reference = program
    preset_name, machine, _ = CROSS[arch]
    backend, preset = get_backend("tvm"), load_preset(preset_name)
    assert backend.missing(preset) is None
    artifact = backend.compile(exported, [x], preset, tmp_path, CompileOptions(tuning="dlight"))
    header = (tmp_path / "model.so").read_bytes()[:64]
    assert int.from_bytes(header[18:20], "little") == machine
    offset, flag = FLOAT_ABI_FLAG[arch]
    assert int.from_bytes(header[offset:offset + 4], "little") & flag
    assert preset.emulator in artifact.details["runs_on"]
    runner = backend.runner(tmp_path, {"threads": 1, "backend_details": artifact.details}, preset)
    outputs, times = runner.run([x], repeat=2)
    assert outputs[0].shape == reference.shape
    assert np.abs(outputs[0] - reference).max() < TOLERANCE
    assert len(times) == 2 and all(t > 0 for t in times)


def test_cli_compiles_runs_and_benches_a_pruned_model(runtime, tmp_path) -> None:
    from typer.testing import CliRunner

    from prunec.cli import app
    from prunec.compile import load_runner

    arch, _ = runtime
    cli, out = CliRunner(), tmp_path / "out"
    result = cli.invoke(app, ["compile", "models:resnet", "--target", CROSS[arch][0], "--backend", "tvm",
                              "--ratio", "0.3", "--tuning", "dlight", "--repeat", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["max_abs_diff"] < 1e-4
    assert f"qemu-{'arm' if arch == 'armv7' else arch}" in manifest["latency"]["where"]
    x = np.random.default_rng(0).standard_normal(manifest["inputs"][0]["shape"]).astype(np.float32)
    np.savez(tmp_path / "x.npz", x)
    result = cli.invoke(app, ["run", str(out), "--inputs", str(tmp_path / "x.npz"),
                              "--output", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    logits = np.load(tmp_path / "y.npz")[manifest["outputs"][0]["name"]]
    np.testing.assert_array_equal(logits, load_runner(out)[1]([x])[0])
    result = cli.invoke(app, ["bench", str(out), "--repeat", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["repeat"] == 2 and figures["min_ms"] <= figures["median_ms"] <= figures["max_ms"]


# ---- failure paths (no build needed) ----

def test_override_folder_without_the_layout_is_refused(tmp_path, monkeypatch) -> None:
    from prunec.targets.tvm_runtime import runtime_root

    (tmp_path / "tvm" / "lib").mkdir(parents=True)
    (tmp_path / "tvm" / "lib" / "libtvm_runtime.so").write_bytes(b"")
    monkeypatch.setenv("PRUNEC_TVM_RUNTIME_RISCV64", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"PRUNEC_TVM_RUNTIME_RISCV64=.* lacks tvm_ffi/lib/libtvm_ffi.so"):
        runtime_root("riscv64")


def test_missing_cross_compiler_names_its_package(tmp_path, monkeypatch) -> None:
    from prunec.targets.tvm_runtime import runtime_root

    monkeypatch.setenv("PRUNEC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PRUNEC_TVM_RUNTIME_ARMV7", raising=False)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "arm-linux-gnueabihf-g++" else real_which(tool))
    with pytest.raises(ToolchainError, match=r"^cannot build the armv7 TVM runtime: arm-linux-gnueabihf-g\+\+ is not "
                                             r"installed \(apt-get install g\+\+-arm-linux-gnueabihf\)$"):
        runtime_root("armv7")
    assert not list((tmp_path / "runtimes").rglob("*"))


def _fake_sdist(cache: Path) -> None:
    # An sdist of the right shape with empty sources, so no download is needed to reach the compile step.
    version = importlib.metadata.version("apache-tvm-ffi")
    top = cache / "stage" / f"apache_tvm_ffi-{version}"
    from prunec.targets.tvm_runtime_build import FFI_SOURCES

    for relative in ["include/tvm/ffi/function.h", "3rdparty/dlpack/include/dlpack/dlpack.h",
                     *(f"src/ffi/{name}" for name in FFI_SOURCES)]:
        (top / relative).parent.mkdir(parents=True, exist_ok=True)
        (top / relative).write_text("")
    (cache / "sources").mkdir()
    with tarfile.open(cache / "sources" / f"apache_tvm_ffi-{version}.tar.gz", "w:gz") as archive:
        archive.add(top, arcname=top.name)


def test_compile_error_names_the_file_and_leaves_no_cache_folder(tmp_path, monkeypatch) -> None:
    from prunec.targets.tvm_runtime import runtime_root

    cache = tmp_path / "cache"
    _fake_sdist(cache)
    compiler = tmp_path / "bin" / "broken-g++"
    compiler.parent.mkdir()
    compiler.write_text("#!/bin/sh\necho 'broken-g++: error: simulated compiler failure' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("PATH", f"{compiler.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PRUNEC_CACHE_DIR", str(cache))
    monkeypatch.delenv("PRUNEC_TVM_RUNTIME_RISCV64", raising=False)
    with pytest.raises(ToolchainError, match=r"broken-g\+\+ failed on \w+\.cc while building the riscv64 TVM "
                                             r"runtime: broken-g\+\+: error: simulated compiler failure"):
        runtime_root("riscv64", "broken-g++")
    assert list((cache / "runtimes" / "riscv64").iterdir()) == []  # the temporary build folder is gone


def test_unfinished_cache_folder_is_never_used(tmp_path, monkeypatch) -> None:
    from prunec.targets import tvm_runtime, tvm_runtime_build

    monkeypatch.setenv("PRUNEC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PRUNEC_TVM_RUNTIME_ARMV7", raising=False)
    tag = f"{tvm_runtime._versions_tag()}_arm-linux-gnueabihf-g++_src-{tvm_runtime_build.recipe_hash()}"
    half = tmp_path / "runtimes" / "armv7" / tag
    (half / "tvm" / "lib").mkdir(parents=True)
    with pytest.raises(ToolchainError, match=r"has no \.complete marker; delete it"):
        tvm_runtime.runtime_root("armv7")


def test_sdist_download_failure_says_to_check_the_network(tmp_path, monkeypatch) -> None:
    from prunec.targets.tvm_runtime_build import _ffi_sdist

    # pip with no index and an empty links folder fails as it does offline, without touching the network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ToolchainError, match=r"could not download the apache-tvm-ffi==.* sources to build the TVM "
                                             r"runtime .*; check the network to PyPI"):
        _ffi_sdist(tmp_path / "cache")
    assert list((tmp_path / "cache" / "sources").iterdir()) == []


def test_manifests_from_before_the_abi_fields_still_load() -> None:
    import dataclasses

    from prunec.compile import _manifest_preset

    stored = dataclasses.asdict(load_preset("armv7"))
    for field in ("llvm_abi", "llvm_float_abi"):  # what an older prunec wrote lacks them
        del stored[field]
    preset = _manifest_preset({"target_preset": stored})
    assert preset.llvm_float_abi == "" and preset.arch == "armv7"
