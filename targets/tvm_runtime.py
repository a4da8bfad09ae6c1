"""Running a TVM artefact: in-process on the host, or with the C++ runner under an emulator.

The runner (``runtime/runner.cc``) only uses the tvm-ffi C++ API. It is compiled once per
architecture against that architecture's TVM runtime and cached under the user cache directory
(``$PRUNEC_CACHE_DIR`` or ``~/.cache/prunec``)::

    runtimes/<arch>/<versions>/tvm/lib/libtvm_runtime.so    the TVM runtime
    runtimes/<arch>/<versions>/tvm_ffi/lib/libtvm_ffi.so     tvm-ffi (+ tvm_ffi/include)
    runtimes/<arch>/<versions>/runner-<source hash>          the runner binary
    runtimes/<arch>/<versions>/.complete                     written last: a folder without it is never used

Where the runtime comes from, per architecture:

- the host: the installed apache-tvm / apache-tvm-ffi wheels, used in place;
- aarch64: the manylinux aarch64 wheels of the installed versions, fetched with ``pip download``;
- armv7, riscv64 (TVM publishes no wheels): built from source on first use with the preset's cross
  compiler (a few minutes, once; see :mod:`.tvm_runtime_build`): tvm-ffi from its sdist, the TVM
  runtime from the sources the installed apache-tvm wheel ships.

``PRUNEC_TVM_RUNTIME_<ARCH>`` (e.g. ``PRUNEC_TVM_RUNTIME_ARMV7``) overrides all of this with a folder
of the ``tvm/lib``, ``tvm_ffi/lib``, ``tvm_ffi/include`` layout, e.g. a runtime built on the device.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from prunec.errors import ToolchainError
from prunec.targets.backend import Runner
from prunec.targets.preset import TargetPreset, host_arch

# The manylinux platform tag of the wheels TVM publishes, per architecture.
WHEEL_PLATFORMS = {"aarch64": "manylinux_2_28_aarch64", "x86_64": "manylinux_2_28_x86_64"}
# Files taken from each wheel: (distribution, members to extract).
WHEEL_MEMBERS = {
    "apache-tvm": ("tvm/lib/libtvm_runtime.so",),
    "apache-tvm-ffi": ("tvm_ffi/lib/libtvm_ffi.so", "tvm_ffi/include/"),
}
# Architectures without a wheel whose runtime is built from source, and the compiler used when the
# caller names none (the built-in presets' cross compilers).
BUILT_FROM_SOURCE = {"armv7": "arm-linux-gnueabihf-g++", "riscv64": "riscv64-linux-gnu-g++"}
RUNNER_TIMEOUT_S = 600


def cache_dir() -> Path:
    """The user cache folder prunec writes runtimes and tuning records to."""
    return Path(os.environ.get("PRUNEC_CACHE_DIR") or Path.home() / ".cache" / "prunec")


def _override_var(arch: str) -> str:
    return f"PRUNEC_TVM_RUNTIME_{arch.upper()}"


def runtime_unavailable(arch: str) -> str | None:
    """Why no TVM runtime for ``arch`` can be had here (None when it is installed, fetchable or buildable)."""
    if (os.environ.get(_override_var(arch)) or arch == host_arch() or arch in WHEEL_PLATFORMS
            or arch in BUILT_FROM_SOURCE):
        return None
    return (f"TVM publishes no {arch} runtime wheel and prunec cannot build one, so the {arch} artefact cannot be "
            f"run here: build libtvm_runtime for {arch} and set {_override_var(arch)} to a folder holding "
            f"tvm/lib/libtvm_runtime.so, tvm_ffi/lib/libtvm_ffi.so and tvm_ffi/include")


def runtime_root(arch: str, compiler: str = "") -> Path:
    """A folder with ``tvm/lib``, ``tvm_ffi/lib`` and ``tvm_ffi/include`` for ``arch``.

    Fetched (aarch64) or built with ``compiler`` (armv7, riscv64; default: :data:`BUILT_FROM_SOURCE`)
    on first use, then cached.
    """
    override = os.environ.get(_override_var(arch))
    if override:
        root = Path(override)
        _check_layout(root, f"{_override_var(arch)}={override}")
        return root
    if arch == host_arch():
        import tvm
        import tvm_ffi

        return _host_layout(Path(tvm.__file__).parent, Path(tvm_ffi.__file__).parent)
    reason = runtime_unavailable(arch)
    if reason:
        raise ToolchainError(reason)
    if arch in BUILT_FROM_SOURCE:
        return _built_runtime(arch, compiler or BUILT_FROM_SOURCE[arch])
    root = cache_dir() / "runtimes" / arch / _versions_tag()
    if not (root / ".complete").is_file():
        _fetch_wheels(arch, root)
    return root


def _built_runtime(arch: str, compiler: str) -> Path:
    from prunec.targets import tvm_runtime_build

    # Keyed by compiler too: the runner links the libraries' C++ API, so both need the same C++ ABI.
    folder = f"{_versions_tag()}_{Path(compiler).name}_src-{tvm_runtime_build.recipe_hash()}"
    root = cache_dir() / "runtimes" / arch / folder
    if (root / ".complete").is_file():
        return root
    if root.exists():  # a build that died before its rename never leaves this; someone else's folder
        raise ToolchainError(f"{root} exists but has no .complete marker; delete it so prunec can rebuild it")
    print(f"prunec: building the TVM runtime for {arch} from source with {compiler} (once; takes minutes), "
          f"cached in {root}", file=sys.stderr, flush=True)
    tvm_runtime_build.build_runtime(arch, compiler, root, cache_dir())
    _check_layout(root, f"the {arch} runtime built in {root}")
    return root


def _versions_tag() -> str:
    return "tvm-{}_ffi-{}".format(*(importlib.metadata.version(d) for d in WHEEL_MEMBERS))


def _host_layout(tvm_dir: Path, ffi_dir: Path) -> Path:
    # The installed packages already have the layout, but in two different parents: link them together.
    root = cache_dir() / "runtimes" / host_arch() / _versions_tag()
    root.mkdir(parents=True, exist_ok=True)
    for name, target in (("tvm", tvm_dir), ("tvm_ffi", ffi_dir)):
        link = root / name
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return root


def _check_layout(root: Path, origin: str) -> None:
    for member in ("tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so", "tvm_ffi/include/tvm/ffi/function.h"):
        if not (root / member).is_file():
            raise ToolchainError(f"{origin} lacks {member}; it must hold tvm/lib, tvm_ffi/lib and tvm_ffi/include")


def _fetch_wheels(arch: str, root: Path) -> None:
    """``pip download`` the installed versions' wheels for ``arch`` and extract the runtime from them."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prunec-wheels-") as scratch:
        requirements = [f"{dist}=={importlib.metadata.version(dist)}" for dist in WHEEL_MEMBERS]
        command = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                   "--only-binary=:all:", "--platform", WHEEL_PLATFORMS[arch],
                   "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}", "-d", scratch,
                   *requirements]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ToolchainError(f"could not download the {arch} TVM runtime wheels ({' '.join(requirements)}): "
                                 f"{(done.stderr.strip().splitlines() or ['pip failed'])[-1]}; check the network "
                                 f"or set {_override_var(arch)}")
        for wheel in Path(scratch).glob("*.whl"):
            dist = "apache-tvm-ffi" if wheel.name.startswith("apache_tvm_ffi") else "apache-tvm"
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if any(name == m or (m.endswith("/") and name.startswith(m)) for m in WHEEL_MEMBERS[dist]):
                        archive.extract(name, root)
    _check_layout(root, f"the downloaded {arch} wheels")
    (root / ".complete").write_text(json.dumps({"arch": arch, "versions": _versions_tag()}))


def runner_binary(arch: str, compiler: str) -> Path:
    """The C++ runner for ``arch``, compiled with ``compiler`` on first use and cached by source hash."""
    root = runtime_root(arch, compiler)
    source = resources.files("prunec.targets") / "runtime" / "runner.cc"
    text = source.read_bytes()
    binary = root / f"runner-{hashlib.sha256(text + compiler.encode()).hexdigest()[:12]}"
    if binary.is_file():
        return binary
    with tempfile.TemporaryDirectory(prefix="prunec-runner-") as scratch:
        src = Path(scratch) / "runner.cc"
        src.write_bytes(text)
        libs = [root / "tvm" / "lib", root / "tvm_ffi" / "lib"]
        command = [compiler, "-std=c++17", "-O2", "-o", str(Path(scratch) / "runner"), str(src),
                   f"-I{root / 'tvm_ffi' / 'include'}", *(f"-L{d}" for d in libs),
                   # libtvm_runtime registers the VM loader; nothing references it directly, so keep it linked.
                   "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed",
                   "-Wl,-rpath," + ":".join(str(d) for d in libs)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ToolchainError(f"{compiler} could not build the TVM runner for {arch}: "
                                 f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        os.replace(Path(scratch) / "runner", binary)
    return binary


class CppRunner:
    """Runs a TVM library with the C++ runner, natively or under ``emulator``; callable as a Runner."""

    def __init__(self, library: Path, arch: str, compiler: str, emulator: str = "", sysroot: str = "",
                 threads: int = 0) -> None:
        self.library = Path(library).resolve()
        self.binary = runner_binary(arch, compiler)
        root = self.binary.parent  # runner_binary keeps the runner in its runtime's folder
        self.prefix = [emulator, "-L", sysroot] if emulator and sysroot else [emulator] if emulator else []
        self.env = dict(os.environ)
        # The rpath covers the runner; LD_LIBRARY_PATH also lets the emulated loader find the libraries.
        self.env["LD_LIBRARY_PATH"] = f"{root / 'tvm' / 'lib'}:{root / 'tvm_ffi' / 'lib'}"
        if sysroot:
            self.env["QEMU_LD_PREFIX"] = sysroot
        if threads:
            self.env["TVM_NUM_THREADS"] = str(threads)

    def run(self, arrays: Sequence[np.ndarray], repeat: int = 0, warmup: int = 0) -> tuple[list[np.ndarray], list[float]]:
        """Outputs and, when ``repeat`` > 0, per-run times in milliseconds measured inside the runner."""
        with tempfile.TemporaryDirectory(prefix="prunec-run-") as scratch:
            inputs = []
            for i, array in enumerate(arrays):
                path = Path(scratch) / f"in_{i}.npy"
                np.save(path, np.ascontiguousarray(array))
                inputs.append(str(path))
            command = [*self.prefix, str(self.binary), str(self.library), scratch,
                       "--repeat", str(repeat), "--warmup", str(warmup), *inputs]
            try:
                done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=RUNNER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise ToolchainError(f"the TVM runner took over {RUNNER_TIMEOUT_S} s: {' '.join(command)}") from None
            if done.returncode != 0:
                raise ToolchainError(f"the TVM runner failed (exit {done.returncode}): "
                                     f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            outputs = [np.load(Path(scratch) / f"out_{i}.npy") for i in range(report["outputs"])]
        return outputs, [float(t) for t in report["times_ms"]]

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.run(arrays)[0]


def emulated_runner(library: Path, preset: TargetPreset, threads: int = 0) -> Runner:
    """The C++ runner for a foreign preset, built with its cross compiler and run under its emulator."""
    return CppRunner(library, preset.arch, preset.cross_compiler, preset.emulator, preset.sysroot, threads)


def native_runner(library: Path, threads: int = 0) -> CppRunner:
    """The C++ runner built with the host g++ (what a deployment on this machine would run)."""
    return CppRunner(library, host_arch(), "g++", threads=threads)


def in_process_runner(library: Path, threads: int = 0) -> Runner:
    """Run the library in this process with the TVM Python runtime (host targets only)."""
    if threads:
        # Read when the thread pool starts; also reconfigure it in case it already has.
        os.environ["TVM_NUM_THREADS"] = str(threads)
    import tvm
    from tvm import relax

    if threads:
        tvm.get_global_func("runtime.config_threadpool")(1, threads)
    device = tvm.cpu()
    machine = relax.VirtualMachine(tvm.runtime.load_module(str(library)), device)
    main = machine["main"]

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        result = main(*(tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in arrays))
        return [t.numpy() for t in _flatten(result)]

    return run


def _flatten(value: object) -> list:
    # A Relax function returns a tensor or a (nested) tuple of them, flattened depth first.
    if hasattr(value, "numpy"):
        return [value]
    return [t for item in value for t in _flatten(item)]
