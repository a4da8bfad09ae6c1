"""Does rounding pruned widths matter in ONNX Runtime? ResNet-50 shape, ratio 0.3, widths unrounded /
rounded to 8 / rounded to 16, each lowered for x86-64 (ORT level "all": NCHWc convolutions) and rpi4
(level "extended", run on this host's ORT), against the unpruned base. Batch 1, 2 threads, median of
9 interleaved rounds (see latency.py's protocol).

    nice .venv/bin/python benchmarks/cnn_rounding.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import interleaved_medians, resnet50  # noqa: E402
from prunec.compile import CompileJob, load_runner, lower_and_verify, prune_and_export  # noqa: E402
from prunec.models import LoadedModel  # noqa: E402
from prunec.pipeline import PruneJob  # noqa: E402
from prunec.targets.preset import load_preset  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    model, example = resnet50()
    loaded = LoadedModel(model, example, {}, "resnet50")
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, prune in (("base", PruneJob(ratio=0.0)), ("ratio 0.3", PruneJob(ratio=0.3)),
                            ("ratio 0.3, round 8", PruneJob(ratio=0.3, round_to=8)),
                            ("ratio 0.3, round 16", PruneJob(ratio=0.3, round_to=16))):
            job = CompileJob(target="x86-64", prune=prune.resolved(), latency_repeat=0, round_widths=False)
            pruned = prune_and_export(loaded, job, load_preset(job.target))
            for target in ("x86-64", "rpi4"):
                out = Path(tmp) / f"{name}-{target}"
                manifest = lower_and_verify(loaded, pruned, replace(job, target=target), out)
                _, run = load_runner(out, 2)
                runners[f"{name} / {target}"] = lambda run=run, x=pruned.inputs: run(x)
            print(f"{name}: FLOPs {manifest['flops_after']:,}", flush=True)
        for key, ms in interleaved_medians(runners, 9).items():
            print(f"{key}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
