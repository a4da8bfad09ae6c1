"""Run the ONNX artefacts of every ``--quantize`` mode in ONNX Runtime for aarch64, under qemu.

ONNX Runtime artefacts are portable files, but the weight-only modes use a contrib op
(``com.microsoft`` ``MatMulNBits``): this checks that ORT's aarch64 build loads and runs them and
agrees with this host's ORT. Steps:

1. take ``libonnxruntime.so`` from ORT's manylinux aarch64 wheel (same version as the host's ORT),
   fetched by the ordinary client: ``pip download onnxruntime==VERSION --platform
   manylinux_2_28_aarch64 --python-version 3.11 --only-binary=:all: --no-deps -d DIR``;
2. build ``ort_run.c`` (a C API runner: int64 ids in, float logits out) with the rpi4 preset's
   cross compiler;
3. compile ``tests/models.py``'s tied-embedding Llama with ``prunec`` for rpi4 (``.onnx``) and
   android-arm64 (``.ort``) in each mode, and run each artefact here (host ORT) and under the
   preset's emulator (``qemu-aarch64 -cpu cortex-a72``).

ORT's CPU detection (cpuinfo) reads ``/proc/cpuinfo``; under qemu-user that is the x86 host's file and
the library segfaults while loading. The emulated run therefore sees an aarch64 ``/proc/cpuinfo``
(two Cortex-A72 cores) bind-mounted in a private mount namespace (``unshare -mr``).

    .venv/bin/python benchmarks/ort_aarch64/check.py --wheel DIR/onnxruntime-*-aarch64.whl
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from models import ALL_CASES, randomize_  # noqa: E402
from prunec.targets.backend import CompileOptions, get_backend  # noqa: E402
from prunec.targets.preset import load_preset  # noqa: E402

CORTEX_A72 = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
                     "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
                     "CPU revision\t: 3\n\n" for i in range(2))
ARTEFACTS = [("rpi4", "none"), ("rpi4", "int8-weights"), ("rpi4", "int4-weights"), ("rpi4", "int4-weights-rtn"),
             ("rpi4", "dynamic"), ("android-arm64", "int8-weights"), ("android-arm64", "int4-weights")]


def runtime_library(wheel: Path, work: Path) -> Path:
    """Extract ``libonnxruntime.so.X.Y.Z`` from the wheel (beside a ``.so.1`` link, the name the
    runner is linked against); returns its path."""
    lib = work / "lib"
    lib.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if Path(n).name.startswith("libonnxruntime.so."))
        (lib / Path(name).name).write_bytes(archive.read(name))
    (lib / "libonnxruntime.so.1").symlink_to(Path(name).name)
    return lib / Path(name).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, required=True, help="ORT's manylinux aarch64 wheel")
    args = parser.parse_args()
    preset = load_preset("rpi4")
    backend = get_backend("onnx")
    model, (ids,), kwargs = ALL_CASES["llama_tied"]()
    randomize_(model)
    model.config.use_cache = False
    program = torch.export.export(model, (ids,), kwargs, strict=False)
    with torch.no_grad():
        reference = program.module()(ids).logits.numpy()
    with tempfile.TemporaryDirectory(prefix="prunec-ort-aarch64-") as tmp:
        work = Path(tmp)
        library = runtime_library(args.wheel, work)
        lib, runner = library.parent, work / "ort_run"
        compiler = preset.cross_compiler.replace("g++", "gcc")  # the runner is C
        subprocess.run([compiler, "-O1", "-Wall", str(HERE / "ort_run.c"), "-o", str(runner), f"-L{lib}",
                        f"-l:{library.name}"], check=True)
        (work / "cpuinfo").write_text(CORTEX_A72)
        ids.numpy().astype(np.int64).tofile(work / "ids.bin")
        rows, script = [], ["set -e", f"mount --bind {work / 'cpuinfo'} /proc/cpuinfo"]
        for target, mode in ARTEFACTS:
            out = work / f"{target}-{mode}"
            target_preset = load_preset(target)
            artifact = backend.compile(program, [ids.numpy()], target_preset, out, CompileOptions(quantize=mode))
            host = backend.runner(out, {"threads": 2, "backend_details": artifact.details}, target_preset)
            rows.append((target, mode, out / artifact.details["runtime_file"], host([ids.numpy()])[0]))
            script.append(f"{preset.emulator} -cpu {preset.llvm_cpu} -L {preset.sysroot} -E LD_LIBRARY_PATH={lib} "
                          f"{runner} {rows[-1][2]} input_ids logits {work / 'ids.bin'} {ids.shape[0]} {ids.shape[1]} "
                          f"{out / 'aarch64.bin'} {reference.size}")
        done = subprocess.run(["unshare", "-mr", "sh", "-c", "\n".join(script)], capture_output=True, text=True)
        print(done.stdout.splitlines()[0] if done.stdout else "", "(aarch64 wheel) under", preset.emulator)
        if done.returncode != 0:
            raise SystemExit(f"the emulated run failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        print("| target | --quantize | file | max abs(aarch64 ORT - host ORT) | relative L2 error vs PyTorch |")
        print("|---|---|---|---|---|")
        for target, mode, path, host_logits in rows:
            emulated = np.fromfile(path.parent / "aarch64.bin", np.float32).reshape(reference.shape)
            relative = np.linalg.norm(emulated - reference) / np.linalg.norm(reference)
            print(f"| {target} | {mode} | {path.name} | {np.abs(emulated - host_logits).max():.2e} | {relative:.3g} |")


if __name__ == "__main__":
    main()
