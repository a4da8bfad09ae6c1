"""Build the TVM runtime for an architecture TVM publishes no wheel for (armv7, riscv64).

The result has the layout :func:`prunec.targets.tvm_runtime.runtime_root` hands to the C++ runner::

    tvm/lib/libtvm_runtime.so    the installed apache-tvm wheel's src/runtime sources (the subset below)
    tvm_ffi/lib/libtvm_ffi.so    the installed apache-tvm-ffi version's sdist (pip download), core library
    tvm_ffi/include              its headers (+ dlpack), what the runner compiles against

Both libraries are compiled with the preset's cross compiler (through ``ccache`` when it is on
PATH), every translation unit in parallel, and linked with ``--no-undefined`` so a missing source
fails here rather than at load time under the emulator. The wheel ships ``include/tvm/runtime`` but
not the ``tvm/support`` headers its runtime sources include; ``runtime/tvm_compat`` supplies them.

Sources are data: :data:`FFI_SOURCES` is the ``tvm_ffi_shared`` list of tvm-ffi's CMakeLists (core +
extra C++ API, as in the wheel's library; without libbacktrace, an autotools build that only makes
stack traces nicer), :data:`RUNTIME_SOURCES` what the Relax VM and the runner need, and
:data:`RUNTIME_EXCLUDED` what the wheel ships but is left out, with the reason.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from prunec.errors import ToolchainError

FFI_DIST = "apache-tvm-ffi"
TVM_DIST = "apache-tvm"

# tvm-ffi's `tvm_ffi_objs` sources (CMakeLists.txt), relative to the sdist's src/ffi. backtrace_win.cc
# is Windows-only (empty elsewhere) and testing/ is the separate tvm_ffi_testing library.
FFI_SOURCES = (
    "backtrace.cc", "object.cc", "error.cc", "function.cc", "tensor.cc", "dtype.cc", "container.cc",
    "init_once.cc", "custom_allocator.cc",
    # TVM_FFI_USE_EXTRA_CXX_API (ON in the wheels): modules, JSON, reflection; the runtime uses them.
    "extra/structural_equal.cc", "extra/structural_hash.cc", "extra/structural_visit.cc",
    "extra/structural_mutate.cc", "extra/visit_error_context.cc", "extra/json_parser.cc", "extra/json_writer.cc",
    "extra/serialization.cc", "extra/dataclass.cc", "extra/reflection_extra.cc", "extra/module.cc",
    "extra/library_module.cc", "extra/library_module_system_lib.cc", "extra/library_module_dynamic_lib.cc",
    "extra/env_context.cc", "extra/env_c_api.cc",
)
# What tvm-ffi's CMake defines for those objects (TVM_FFI_USE_LIBBACKTRACE=OFF: see the docstring).
# Compiled directly rather than with its CMake: that needs CMake >= 3.26, newer than Debian 12's.
FFI_DEFINES = ("TVM_FFI_EXPORTS", "TVM_FFI_USE_LIBBACKTRACE=0", "TVM_FFI_BACKTRACE_ON_SEGFAULT=1")
FFI_FLAGS = ("-fvisibility=hidden", "-fvisibility-inlines-hidden")

# The apache-tvm wheel's src/runtime files the Relax VM and the runner need.
RUNTIME_SOURCES = (
    "module.cc", "tensor.cc", "device_api.cc", "cpu_device_api.cc", "workspace_pool.cc", "thread_pool.cc",
    "threading_backend.cc", "logging.cc", "file_utils.cc", "const_loader_module.cc", "static_library.cc",
    "timer.cc", "memory/memory_manager.cc",
    "vm/builtin.cc", "vm/bytecode.cc", "vm/executable.cc", "vm/vm.cc",
)
# What the wheel ships under src/runtime but the build leaves out, and why.
RUNTIME_EXCLUDED = {
    "rpc/": "remote sessions (tvm.rpc); the runner loads the library locally",
    "extra/disco/": "multi-device sessions for sharded LLM serving",
    "extra/contrib/": "wrappers of vendor libraries (cuBLAS, cuDNN, ...) absent on these CPUs",
    "vm/cuda/": "CUDA graphs; CPU targets only",
    "vm/hexagon/": "Hexagon DSP",
    "vm/kv_state.cc vm/paged_kv_cache.cc vm/rnn_state.cc vm/attn_backend.cc vm/lm_support.cc":
        "LLM serving state (KV caches, sampling); prunec's compiled models call none of it",
    "vm/tensor_cache_support.cc": "loads weights from an MLC tensor cache; prunec binds weights as constants",
    "builtin_fp16.cc": "fp16 fallbacks need compiler-rt's builtin_fp16.h (not in the wheel); the targets' "
                       "libgcc has them and prunec compiles float32 models",
}
# -O1, not -O2: the model's kernels are compiled by TVM's LLVM into model.so; these libraries only load
# it and interpret a few dozen VM instructions per call, and -O1 compiles about 30% faster (8.3 s ->
# 5.9 s for vm/builtin.cc, the largest file), which matters for a first run and for CI.
OPT_FLAGS = ("-O1",)
COMMON_FLAGS = ("-std=c++17", "-fPIC", "-Wno-psabi")  # -Wno-psabi: GCC's notes on an ABI change of GCC 7
SYSTEM_LIBS = ("-lpthread", "-ldl")
# RISC-V has no 1- and 2-byte atomic instructions; GCC calls libatomic for them (the thread pool's flags).
ARCH_LIBS = {"riscv64": ("-latomic",)}
PIP_TIMEOUT_S = 300


@dataclass(frozen=True)
class RuntimeBuild:
    """What :func:`build_runtime` built: the layout root, how long it took, the libraries' sizes."""

    root: Path
    seconds: float
    sizes: dict[str, int]


def recipe_hash() -> str:
    """A short hash of everything that decides the built libraries (sources, flags, compat headers)."""
    digest = hashlib.sha256(json.dumps([FFI_SOURCES, FFI_DEFINES, FFI_FLAGS, RUNTIME_SOURCES, OPT_FLAGS,
                                        COMMON_FLAGS, SYSTEM_LIBS, ARCH_LIBS]).encode())
    for header in sorted(_compat_dir().rglob("*.h")):
        digest.update(header.read_bytes())
    return digest.hexdigest()[:10]


def build_runtime(arch: str, compiler: str, root: Path, cache: Path) -> RuntimeBuild:
    """Build the ``arch`` runtime with ``compiler`` into ``root`` (atomically: all of it or nothing).

    ``cache`` keeps the downloaded tvm-ffi sdist, so a second architecture does not fetch it again.
    Raises :class:`ToolchainError` naming what to install or do when a step fails.
    """
    from prunec.targets.tvm_backend import missing_tool

    reason = missing_tool(compiler)
    if reason:
        raise ToolchainError(f"cannot build the {arch} TVM runtime: {reason}")
    started = time.perf_counter()
    sdist = _ffi_sdist(cache)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the final folder (same filesystem) so the last step is one atomic rename.
    with tempfile.TemporaryDirectory(prefix=f".building-{root.name}-", dir=root.parent) as scratch:
        work = Path(scratch)
        ffi_src = _extract(sdist, work / "ffi-src")
        layout = work / "layout"
        include = layout / "tvm_ffi" / "include"
        shutil.copytree(ffi_src / "include", include)
        shutil.copytree(ffi_src / "3rdparty" / "dlpack" / "include" / "dlpack", include / "dlpack")
        runtime_src = _stage_runtime_sources(work / "tvm-src")
        include_flags = [f"-I{runtime_src / 'include'}", f"-I{_compat_dir() / 'include'}", f"-I{include}"]
        ffi_jobs = [(ffi_src / "src" / "ffi" / name, [*FFI_FLAGS, *(f"-D{d}" for d in FFI_DEFINES)])
                    for name in FFI_SOURCES]
        runtime_jobs = [(runtime_src / "src" / "runtime" / name, []) for name in RUNTIME_SOURCES]
        objects = _compile_all(compiler, arch, ffi_jobs + runtime_jobs, include_flags, work / "obj")
        ffi_lib = layout / "tvm_ffi" / "lib" / "libtvm_ffi.so"
        runtime_lib = layout / "tvm" / "lib" / "libtvm_runtime.so"
        _link(compiler, arch, ffi_lib, objects[:len(ffi_jobs)], [])
        _link(compiler, arch, runtime_lib, objects[len(ffi_jobs):], [f"-L{ffi_lib.parent}", "-ltvm_ffi"])
        sizes = {"libtvm_ffi.so": ffi_lib.stat().st_size, "libtvm_runtime.so": runtime_lib.stat().st_size}
        seconds = time.perf_counter() - started
        (layout / ".complete").write_text(json.dumps({
            "arch": arch, "compiler": compiler, "recipe": recipe_hash(), "seconds": round(seconds, 1), "sizes": sizes,
            TVM_DIST: importlib.metadata.version(TVM_DIST), FFI_DIST: importlib.metadata.version(FFI_DIST)}))
        try:
            layout.rename(root)
        except OSError:
            if not (root / ".complete").is_file():  # not a concurrent build that finished first
                raise
    return RuntimeBuild(root, seconds, sizes)


def _compat_dir() -> Path:
    return Path(str(resources.files("prunec.targets") / "runtime" / "tvm_compat"))


def _ffi_sdist(cache: Path) -> Path:
    """The installed tvm-ffi version's sdist, downloaded with pip once into ``cache``."""
    version = importlib.metadata.version(FFI_DIST)
    folder = cache / "sources"
    found = sorted(folder.glob(f"apache_tvm_ffi-{version}.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prunec-sdist-", dir=folder) as scratch:
        # --no-binary for this one package only: build dependencies still come as wheels.
        command = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                   "--no-binary", FFI_DIST, "-d", scratch, f"{FFI_DIST}=={version}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"downloading the {FFI_DIST}=={version} sources took over {PIP_TIMEOUT_S} s; "
                                 f"check the network to PyPI") from None
        archives = list(Path(scratch).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive downloaded"])[-1]
            raise ToolchainError(f"could not download the {FFI_DIST}=={version} sources to build the TVM runtime "
                                 f"({last}); check the network to PyPI")
        target = folder / archives[0].name
        os.replace(archives[0], target)
    return target


def _extract(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    (top,) = into.iterdir()  # an sdist holds one top-level folder
    return top


def _stage_runtime_sources(into: Path) -> Path:
    """The wheel's src/runtime and include/tvm beside the compat src/support (the sources include
    ``../support/*.h`` relative to themselves)."""
    import tvm

    wheel = Path(tvm.__file__).parent
    missing = [n for n in RUNTIME_SOURCES if not (wheel / "src" / "runtime" / n).is_file()]
    if missing:
        raise ToolchainError(f"the installed apache-tvm {importlib.metadata.version(TVM_DIST)} lacks the runtime "
                             f"sources {', '.join(missing)}; reinstall it (pip install 'prunec[tvm]')")
    shutil.copytree(wheel / "src" / "runtime", into / "src" / "runtime")
    shutil.copytree(_compat_dir() / "src" / "support", into / "src" / "support")
    shutil.copytree(wheel / "include", into / "include")
    return into


def _compile_all(compiler: str, arch: str, jobs: list[tuple[Path, list[str]]], include_flags: list[str],
                 out: Path) -> list[Path]:
    out.mkdir(parents=True)
    launcher = ["ccache"] if shutil.which("ccache") else []

    def compile_one(index: int) -> Path:
        source, flags = jobs[index]
        obj = out / f"{index:02d}-{source.stem}.o"
        command = [*launcher, compiler, *COMMON_FLAGS, *OPT_FLAGS, *flags, *include_flags, "-c", str(source),
                   "-o", str(obj)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line] or ["no error message"]
            raise ToolchainError(f"{compiler} failed on {source.name} while building the {arch} TVM runtime: "
                                 f"{errors[0].strip()}")
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(compile_one, range(len(jobs))))


def _link(compiler: str, arch: str, library: Path, objects: list[Path], libs: list[str]) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    command = [compiler, "-shared", "-o", str(library), *map(str, objects), *libs, *SYSTEM_LIBS,
               *ARCH_LIBS.get(arch, ()), f"-Wl,-soname,{library.name}", "-Wl,--no-undefined"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "undefined" in line or "error" in line]
        raise ToolchainError(f"{compiler} could not link {library.name} for {arch}: "
                             f"{(lines or done.stderr.strip().splitlines() or ['no output'])[0].strip()}")
