"""Target presets as data: the built-in ones, a user's own file, malformed files, `prunec targets`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prunec.cli import app
from prunec.errors import TargetError
from prunec.targets.preset import host_arch, list_presets, load_preset

runner = CliRunner()

BUILT_IN = {"x86-64": "x86_64", "x86-64-avx512": "x86_64", "rpi4": "aarch64", "rpi5": "aarch64", "jetson-orin-cpu": "aarch64",
            "android-arm64": "aarch64", "armv7": "armv7", "riscv64": "riscv64"}

MY_BOARD = """
name = "my-board"
description = "A user's board"
arch = "aarch64"
[llvm]
triple = "aarch64-linux-gnu"
cpu = "cortex-a53"
features = ["+neon"]
[onnxruntime]
platform = "linux-arm64"
optimization_level = "basic"
ort_format = true
[toolchain]
cross_compiler = "aarch64-linux-gnu-g++"
emulator = "qemu-aarch64"
sysroot = "/usr/aarch64-linux-gnu"
[pruning]
width_multiple = 4
"""


def test_built_in_presets_cover_the_issue_list() -> None:
    presets = {p.name: p for p in list_presets()}
    assert {name: p.arch for name, p in presets.items()} == BUILT_IN
    rpi4 = presets["rpi4"]
    assert rpi4.tvm_target() == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    assert rpi4.emulator == "qemu-aarch64" and rpi4.cross_compiler == "aarch64-linux-gnu-g++"
    assert presets["android-arm64"].ort_format and not rpi4.ort_format
    assert presets["x86-64"].is_host == (host_arch() == "x86_64")
    for p in presets.values():
        assert p.width_multiple >= 1 and p.ort_optimization_level in ("basic", "extended", "all")
        # Level "all" bakes in host-specific layouts: only the host preset may use it.
        assert p.ort_optimization_level != "all" or p.arch == "x86_64"


def test_a_user_preset_file_loads_and_compiles(tmp_path) -> None:
    path = tmp_path / "my-board.toml"
    path.write_text(MY_BOARD)
    preset = load_preset(path)
    assert (preset.name, preset.llvm_cpu, preset.ort_format, preset.source) == ("my-board", "cortex-a53", True, str(path))
    pytest.importorskip("onnxruntime", reason="compiling needs onnxruntime")
    pytest.importorskip("onnxscript", reason="compiling needs onnxscript")
    out = tmp_path / "out"
    result = runner.invoke(app, ["compile", "models:residual_mlp", "--target", str(path), "--repeat", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "my-board" and manifest["target_preset"]["llvm_cpu"] == "cortex-a53"
    assert [f["path"] for f in manifest["files"]] == ["model.onnx", "model.ort"]
    path.unlink()  # the directory carries its preset: it runs without the file
    result = runner.invoke(app, ["bench", str(out), "--repeat", "2", "--json"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace('arch = "aarch64"', 'arch = "mips"'), "arch 'mips'"),
    (lambda t: t.replace('"basic"', '"turbo"'), "optimization_level"),
    (lambda t: t.replace("width_multiple = 4", "width_multiple = 0"), "width_multiple"),
    (lambda t: t.replace("[llvm]", "[llvmx]"), "malformed"),
    (lambda t: t + "\n[[[", "malformed"),
])
def test_malformed_preset_is_a_target_error(tmp_path, edit, message) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(edit(MY_BOARD))
    with pytest.raises(TargetError, match=message.replace("(", r"\(")):
        load_preset(path)


def test_targets_command_lists_and_shows() -> None:
    result = runner.invoke(app, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == set(BUILT_IN)
    assert all("onnx" in r["backends"] for r in rows)
    result = runner.invoke(app, ["targets", "--show", "rpi5", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["llvm_cpu"] == "cortex-a76"
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0 and "jetson-orin-cpu" in result.stdout
    result = runner.invoke(app, ["targets", "--show", "pdp-11"])
    assert result.exit_code == TargetError.exit_code == 8 and "unknown target 'pdp-11'" in result.output


def test_host_cpu_features_are_checked_for_x86_presets() -> None:
    from prunec.targets.preset import missing_host_features

    avx512 = load_preset("x86-64-avx512")
    if host_arch() != "x86_64":
        assert missing_host_features(avx512, "flags\t: fpu sse2") == []  # nothing to check off x86
        return
    assert missing_host_features(avx512, "flags\t: fpu sse2 avx2 fma") == ["avx512f", "avx512bw", "avx512dq", "avx512vl"]
    assert missing_host_features(avx512, "flags\t: avx2 fma avx512f avx512bw avx512dq avx512vl") == []
    assert missing_host_features(load_preset("rpi4"), "flags\t: sse2") == []  # not an x86 preset


def test_wider_presets_this_host_runs_are_suggested() -> None:
    from prunec.targets.preset import wider_host_presets

    x86 = load_preset("x86-64")
    if host_arch() != "x86_64":
        assert wider_host_presets(x86) == []  # not this host's architecture
        return
    assert wider_host_presets(x86, "flags\t: avx2 fma avx512f avx512bw avx512dq avx512vl") == ["x86-64-avx512"]
    assert wider_host_presets(x86, "flags\t: avx2 fma") == []  # an AVX2-only CPU: nothing wider it runs
    assert wider_host_presets(load_preset("x86-64-avx512"), "flags\t: avx2 fma avx512f avx512bw avx512dq avx512vl") == []
    assert wider_host_presets(load_preset("rpi4"), "flags\t: avx512f") == []  # foreign: not compiled for this CPU


def test_tvm_refuses_a_host_preset_whose_features_this_cpu_lacks(monkeypatch) -> None:
    pytest.importorskip("tvm", reason="the tvm backend needs apache-tvm")
    if host_arch() != "x86_64":
        pytest.skip("x86 feature check; this host is not x86_64")
    from prunec.targets import tvm_backend
    from prunec.targets.backend import get_backend

    monkeypatch.setattr(tvm_backend, "missing_host_features", lambda preset: ["avx512f"])
    reason = get_backend("tvm").missing(load_preset("x86-64-avx512"))
    assert reason and "lacks avx512f" in reason and "x86-64" in reason
