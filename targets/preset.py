"""Target presets: what a device is, as data (one TOML file per target in this folder).

A preset names the LLVM triple/CPU/features TVM compiles for, the ONNX Runtime platform and
offline optimisation level, the cross compiler and emulator used to build and run a binary for a
foreign architecture, and the width multiple its kernels like best. Users add their own preset by
passing a path to a ``.toml`` file of the same shape wherever a target name is accepted.
"""

from __future__ import annotations

import platform
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from prunec.errors import TargetError

ARCHES = ("x86_64", "aarch64", "armv7", "riscv64")


@dataclass(frozen=True)
class TargetPreset:
    """One device target (see the module docstring); build with :func:`load_preset`."""

    name: str
    description: str
    arch: str
    llvm_triple: str
    llvm_cpu: str
    llvm_features: tuple[str, ...]
    ort_platform: str
    ort_optimization_level: str
    ort_format: bool
    cross_compiler: str
    emulator: str
    sysroot: str
    width_multiple: int
    source: str = ""
    # Defaults so manifests written before these existed still load.
    llvm_abi: str = ""  # LLVM target ABI (riscv64: lp64d, what Debian's toolchain links); "" = LLVM's default
    llvm_float_abi: str = ""  # "hard"/"soft" (32-bit ARM: must match the cross compiler's libraries)

    @property
    def is_host(self) -> bool:
        """True when binaries for this target run natively on this machine (no emulator)."""
        return self.arch == host_arch()

    def tvm_target(self) -> dict[str, Any]:
        """The TVM 0.27 target as a JSON dict (``tvm.target.Target(preset.tvm_target())``)."""
        target: dict[str, Any] = {"kind": "llvm", "mtriple": self.llvm_triple, "mcpu": self.llvm_cpu}
        if self.llvm_features:
            target["mattr"] = list(self.llvm_features)
        if self.llvm_abi:
            target["mabi"] = self.llvm_abi
        if self.llvm_float_abi:
            target["mfloat-abi"] = self.llvm_float_abi
        return target


def missing_host_features(preset: TargetPreset, cpuinfo: str | None = None) -> list[str]:
    """The preset's x86 LLVM features (``+avx512f``) this host's CPU lacks; empty when it has them all
    or when that cannot be read here (only Linux x86 hosts are checked: /proc/cpuinfo flags)."""
    if preset.arch != "x86_64" or host_arch() != "x86_64":
        return []
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    line = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    return [f[1:] for f in preset.llvm_features if f.startswith("+") and f[1:].lower() not in flags]


def wider_host_presets(preset: TargetPreset, cpuinfo: str | None = None) -> list[str]:
    """Built-in presets for the same architecture that add LLVM features to ``preset``'s and that this
    host's CPU has (``x86-64`` on an AVX-512 host: ``x86-64-avx512``). A compiler like TVM only uses
    the features it is told, while ONNX Runtime picks its kernels at run time."""
    if not preset.is_host or not preset.llvm_features:
        return []
    own = set(preset.llvm_features)
    return [other.name for other in list_presets()
            if other.arch == preset.arch and own < set(other.llvm_features)
            and not missing_host_features(other, cpuinfo)]


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "armv7"}.get(machine, machine)


def _builtin_files() -> dict[str, Any]:
    return {p.name[:-5]: p for p in resources.files("prunec.targets").iterdir() if p.name.endswith(".toml")}


def list_presets() -> list[TargetPreset]:
    """All built-in presets, sorted by name."""
    return [load_preset(name) for name in sorted(_builtin_files())]


def load_preset(name_or_path: str | Path) -> TargetPreset:
    """A built-in preset by name (``rpi4``) or a user's preset file (``my-board.toml``)."""
    text_name = str(name_or_path)
    builtin = _builtin_files()
    if text_name in builtin:
        source, text = f"built-in {text_name}", builtin[text_name].read_text(encoding="utf-8")
    elif text_name.endswith(".toml"):
        path = Path(text_name)
        if not path.is_file():
            raise TargetError(f"target file {path} not found; pass a built-in target ({', '.join(sorted(builtin))}) "
                              f"or an existing .toml preset")
        source, text = str(path), path.read_text(encoding="utf-8")
    else:
        raise TargetError(f"unknown target '{text_name}'; choose one of {', '.join(sorted(builtin))} "
                          f"(prunec targets lists them) or pass a .toml preset file")
    try:
        data = tomllib.loads(text)
        llvm, ort, tools, pruning = data["llvm"], data["onnxruntime"], data["toolchain"], data.get("pruning", {})
        preset = TargetPreset(
            name=str(data["name"]), description=str(data.get("description", "")), arch=str(data["arch"]),
            llvm_triple=str(llvm["triple"]), llvm_cpu=str(llvm.get("cpu", "generic")),
            llvm_features=tuple(llvm.get("features", ())),
            llvm_abi=str(llvm.get("abi", "")), llvm_float_abi=str(llvm.get("float_abi", "")),
            ort_platform=str(ort.get("platform", "")),
            ort_optimization_level=str(ort.get("optimization_level", "extended")),
            ort_format=bool(ort.get("ort_format", False)),
            cross_compiler=str(tools.get("cross_compiler", "")), emulator=str(tools.get("emulator", "")),
            sysroot=str(tools.get("sysroot", "")), width_multiple=int(pruning.get("width_multiple", 1)),
            source=source)
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TargetError(f"target preset {source} is malformed ({type(exc).__name__}: {exc}); "
                          f"compare it with a built-in one (prunec targets --show rpi4)") from None
    if preset.arch not in ARCHES:
        raise TargetError(f"target preset {source}: arch '{preset.arch}' is not one of {', '.join(ARCHES)}")
    if preset.ort_optimization_level not in ("disable", "basic", "extended", "all"):
        raise TargetError(f"target preset {source}: optimization_level must be disable, basic, extended or all")
    if preset.width_multiple < 1:
        raise TargetError(f"target preset {source}: width_multiple must be >= 1")
    return preset
