"""TVM on the host vs ONNX Runtime vs PyTorch eager, batch 1: CNNs with random weights (224x224) and
SmolLM2-135M prefill (``smollm2``: the packaged real weights, 128 tokens -> logits).

Variants, all measured in one run on the same input:
  torch            PyTorch eager (torch.set_num_threads(THREADS))
  onnxruntime      prunec's ONNX backend for the x86-64 preset (offline-optimised), intra-op THREADS
  tvm-none         TVM Relax, default CPU pipeline, no schedules (what an untuned build gives)
  tvm-dlight-tvm   TVM 0.27's own CPU dlight rules only (GEMV, Reduction)
  tvm-dlight       prunec's --tuning dlight: its conv2d/matmul rule + TVM's rules (no measurement),
                   convolutions in NHWC/HWIO as prunec lowers them
  tvm-dlight-nchw  the same, convolutions left in NCHW (how prunec lowered them before 2026-11-23)
  tvm-dlight-unshared  the same, a tied embedding and LM head kept as two tables (before 2026-11-23)
  tvm-ms           --tuning metaschedule with --ms-trials trials per task (only with --ms-trials > 0)
TVM variants run in-process with TVM_NUM_THREADS=THREADS. Each variant: 1 warm-up run, then the
median of --repeat runs (the untuned build: --slow-repeat runs). Lowering (and tuning) time is
reported beside the latency, and the size of each artefact (``model.so``; ORT: the runtime file). Max
|variant - PyTorch| is printed as a correctness check.

    TVM_NUM_THREADS=2 python benchmarks/tvm_latency.py --models resnet50,resnet18,mobilenetv2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

THREADS = 2
PREFILL_TOKENS = 128


class Logits(torch.nn.Module):
    """A Hugging Face causal LM's prefill: input ids -> logits, no KV cache (one plain tensor)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


class Pooled(torch.nn.Module):
    """A Hugging Face vision backbone returning its pooled features (one plain tensor)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).pooler_output


def build_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and its example input: an image batch of 1, or 128 token ids for ``smollm2``."""
    import transformers

    torch.manual_seed(0)
    if name == "smollm2":
        from prunec.models import load_model

        loaded = load_model("smollm2-135m", seq_len=PREFILL_TOKENS)
        return Logits(loaded.model).eval(), loaded.args[0]
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    if name == "resnet50":  # ResNetConfig() defaults are ResNet-50: bottleneck, depths 3-4-6-3
        model = transformers.ResNetModel(transformers.ResNetConfig())
    elif name == "resnet18":
        model = transformers.ResNetModel(transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2],
                                                                   hidden_sizes=[64, 128, 256, 512]))
    elif name == "mobilenetv2":
        model = transformers.MobileNetV2Model(transformers.MobileNetV2Config())
    else:
        raise SystemExit(f"unknown model {name}; choose resnet50, resnet18, mobilenetv2, smollm2")
    return Pooled(model).eval(), image


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def tvm_variant(program: torch.export.ExportedProgram, x: np.ndarray, how: str, trials: int,
                scratch: Path, preset_name: str) -> tuple[Callable[[Sequence[np.ndarray]], list[np.ndarray]], float, dict[str, Any]]:
    """Lower with the given scheduling; returns the runner, lowering seconds and build details."""
    import tvm

    from prunec.targets import tvm_backend, tvm_runtime, tvm_tuning
    from prunec.targets.backend import CompileOptions
    from prunec.targets.preset import load_preset

    preset = load_preset(preset_name)
    out = scratch / how
    out.mkdir()
    started = time.perf_counter()
    if how in ("dlight-tvm", "dlight-nchw", "dlight-unshared"):  # tvm_backend.lower's steps, one changed
        target = tvm.target.Target(tvm_backend.tvm_target(preset))
        layout = None if how == "dlight-nchw" else tvm_backend.CONV2D_LAYOUT
        module = tvm_backend.legalize_and_fuse(tvm_backend.import_program(program), target, layout,
                                               share_tied=how != "dlight-unshared")
        module = tvm_tuning.apply_dlight(module, target, tvm_tuning.dlight_rules(with_prunec_rules=how != "dlight-tvm"))
        tvm_backend.export_library(tvm.compile(module, target=target), preset, out / tvm_backend.LIBRARY_FILE)
        details = {"scheduled_tasks": tvm_tuning.count_scheduled(module), "tasks": tvm_tuning.count_functions(module)}
    else:
        tuning = {"none": "none", "dlight": "dlight", "ms": "metaschedule"}[how]
        artifact = tvm_backend.TvmBackend().compile(program, [x], preset, out,
                                                    CompileOptions(tuning=tuning, tuning_trials=trials))
        details = artifact.details
    seconds = time.perf_counter() - started
    details["library_bytes"] = (out / tvm_backend.LIBRARY_FILE).stat().st_size
    return tvm_runtime.in_process_runner(out / tvm_backend.LIBRARY_FILE, THREADS), seconds, details


def ort_variant(program: torch.export.ExportedProgram, x: np.ndarray, scratch: Path) -> tuple[Callable, float, int]:
    from prunec.targets.backend import CompileOptions, get_backend
    from prunec.targets.preset import load_preset

    backend, preset = get_backend("onnx"), load_preset("x86-64")
    out = scratch / "onnx"
    out.mkdir()
    started = time.perf_counter()
    artifact = backend.compile(program, [x], preset, out, CompileOptions())
    seconds = time.perf_counter() - started
    size = (out / artifact.details["runtime_file"]).stat().st_size
    return backend.runner(out, {"threads": THREADS, "backend_details": artifact.details}, preset), seconds, size


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model, x = build_model(name)
    with torch.no_grad():
        reference = model(x).numpy()
        program = torch.export.export(model, (x,), strict=False)
    arr = x.numpy()
    rows: dict[str, Any] = {}
    with torch.no_grad():
        rows["torch"] = {"ms": median_ms(lambda: model(x), args.repeat), "build_s": 0.0, "max_abs_diff": 0.0}
    with tempfile.TemporaryDirectory(prefix="prunec-tvm-bench-") as scratch:
        run, seconds, size = ort_variant(program, arr, Path(scratch))
        rows["onnxruntime"] = {"ms": median_ms(lambda: run([arr]), args.repeat), "build_s": seconds, "bytes": size,
                               "max_abs_diff": float(np.abs(run([arr])[0] - reference).max())}
        variants = [v for v in args.variants.split(",") if v != "ms"] + (["ms"] if args.ms_trials > 0 else [])
        for how in variants:
            run, seconds, details = tvm_variant(program, arr, how, args.ms_trials, Path(scratch), args.preset)
            repeat = args.slow_repeat if how in ("none", "dlight-tvm") else args.repeat
            rows[f"tvm-{how}"] = {"ms": median_ms(lambda: run([arr]), repeat), "build_s": seconds,
                                  "max_abs_diff": float(np.abs(run([arr])[0] - reference).max()),
                                  "tuning_s": details.get("tuning_seconds", 0.0), "bytes": details["library_bytes"],
                                  "scheduled": f"{details.get('scheduled_tasks', 0)}/{details.get('tasks', 0)}"}
            print(f"  {name} tvm-{how}: {rows[f'tvm-{how}']}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,resnet18,mobilenetv2")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--slow-repeat", type=int, default=3, help="runs of the unscheduled builds (seconds each)")
    parser.add_argument("--variants", default="none,dlight-tvm,dlight", help="TVM variants besides tvm-ms")
    parser.add_argument("--ms-trials", type=int, default=0, help="MetaSchedule trials per task (0: skip the variant)")
    parser.add_argument("--preset", default="x86-64",
                        help="target preset of the TVM variants (x86-64: AVX2; x86-64-avx512 on an AVX-512 host)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)
    results = {}
    for name in args.models.split(","):
        results[name] = bench_model(name, args)
    print(f"batch 1 (CNNs 224x224, smollm2 {PREFILL_TOKENS} tokens), {THREADS} threads, median ms "
          "(build seconds; max |diff| vs PyTorch)")
    for name, rows in results.items():
        ort = rows["onnxruntime"]["ms"]
        print(f"\n{name}")
        for variant, row in rows.items():
            extra = f", scheduled {row['scheduled']}" if "scheduled" in row else ""
            size = f", {row['bytes'] / 1e6:.1f} MB" if "bytes" in row else ""
            print(f"  {variant:20s} {row['ms']:10.1f} ms  {row['ms'] / ort:6.2f}x ORT  "
                  f"(build {row['build_s']:.0f} s{extra}{size}; diff {row['max_abs_diff']:.1e})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
