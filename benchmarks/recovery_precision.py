"""Recovery in float32 vs bfloat16 autocast, side by side on SmolLM2-135M.

Protocol: prune SmolLM2-135M to 80% of its non-embedding parameters (fluctuation + reconstruction,
FFN only) with ``--prune-windows`` windows of 512 tokens of wiki.valid.tokens; then, for each
precision, distil a fresh copy of the pruned model from the base for ``--steps`` AdamW steps of
``--batch`` windows (the next windows of wiki.valid.tokens, lr 1e-4) and report seconds per window,
the distillation loss (mean of the first 5 and of the last 5 steps) and perplexity on the first
``--test-windows`` windows of 512 tokens of wiki.test.raw. Same process, same pruned model, same
windows for every precision; threads = 2.

    python benchmarks/recovery_precision.py --data ../shared/data/wikitext2
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

import prunec
from prunec.calibration import CalibrationConfig, load_calibration
from prunec.evaluate import perplexity, tokenize_file
from prunec.models import load_model
from prunec.recovery import RecoveryConfig, distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with wiki.test.raw and wiki.valid.tokens")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--prune-windows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--test-windows", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model("smollm2-135m", seq_len=512)
    test = tokenize_file(args.data / "wiki.test.raw", loaded.tokenizer)
    windows = load_calibration(args.data / "wiki.valid.tokens", loaded.tokenizer,
                               CalibrationConfig(n_samples=args.prune_windows + args.steps * args.batch, seq_len=512))
    calib, train = windows[: args.prune_windows], windows[args.prune_windows:]
    result = prunec.prune(loaded.model, loaded.args, budget="params=0.8", kinds=("channels",),
                          importance="fluctuation", reconstruct=True, calibration=calib)
    print(f"pruned with {len(calib)} windows: perplexity {perplexity(result.module, test, 512, args.test_windows):.2f} "
          f"on {args.test_windows} test windows")
    print("| precision | s / window | loss (first 5 -> last 5 steps) | perplexity |")
    print("|---|---|---|---|")
    for precision in args.precisions.split(","):
        student = copy.deepcopy(result.module)
        config = RecoveryConfig(steps=args.steps, batch_size=args.batch, lr=1e-4, device="cpu", precision=precision)
        t = time.perf_counter()
        losses = distill(student, loaded.model, train, config)
        per_window = (time.perf_counter() - t) / (args.steps * args.batch)
        ppl = perplexity(student, test, 512, args.test_windows)
        print(f"| {precision} | {per_window:.2f} | {sum(losses[:5]) / 5:.3f} -> {sum(losses[-5:]) / 5:.3f} | {ppl:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
