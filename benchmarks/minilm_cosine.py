"""MiniLM-L6 (all-MiniLM-L6-v2): cosine similarity of pruned vs base sentence embeddings.

Protocol: 30% of the units of every FFN (`channels`) and attention (`heads`) group removed (uniform
per group; the hidden size is the encoder's output and stays). Calibration: the first N lines of
wiki.valid.tokens with at least 8 words, tokenised to 64 tokens each. Evaluation: the first 200
non-heading lines of wiki.test.raw with at least 8 words, padded/truncated to 64 tokens. Embedding =
last hidden state mean-pooled over the real tokens (the sentence-transformers recipe; before
2026-11-23 the mean also covered the padding, which ``--pool-padding`` reproduces); reported: mean
cosine similarity.

    python benchmarks/minilm_cosine.py --data ../shared/data/wikitext2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import prunec
from prunec.models import load_model
from prunec.recovery import RecoveryConfig
from prunec.sensitivity import SensitivityConfig

SEQ = 64


def _lines(path: Path, n: int) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if len(line.split()) >= 8 and not line.startswith("="):
            out.append(line)
        if len(out) == n:
            break
    return out


@torch.no_grad()
def embed(model, batches, pad_id: int | None = None) -> torch.Tensor:
    """Mean-pooled last hidden states: over the real tokens when ``pad_id`` is given (the
    sentence-transformers recipe), else over all SEQ positions, padding included (the first protocol)."""
    out = []
    for (ids,) in batches:
        hidden = model(ids)
        hidden = hidden.last_hidden_state if hasattr(hidden, "last_hidden_state") else hidden[0]
        if pad_id is None:
            out.append(hidden.mean(1))
        else:
            mask = (ids != pad_id).to(hidden.dtype)[..., None]
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--methods", default="l2-uniform,activation-uniform,fluctuation-recon-uniform,"
                        "fluctuation-recon-sensitivity,obs-recon-uniform,fluctuation-recon-recover")
    parser.add_argument("--sensitivity-batches", type=int, default=None,
                        help="calibration batches per sensitivity probe (default: SensitivityConfig's)")
    parser.add_argument("--pool-padding", action="store_true",
                        help="mean over all 64 positions, padding included (the protocol before 2026-11-23)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model("minilm-l6")
    tok = loaded.tokenizer

    def batches(lines):
        enc = tok(lines, padding="max_length", truncation=True, max_length=SEQ, return_tensors="pt")
        return [(enc.input_ids[i : i + 1],) for i in range(len(lines))]

    calib = batches(_lines(args.data / "wiki.valid.tokens", args.calib_samples))
    test = batches(_lines(args.data / "wiki.test.raw", 200))
    pad_id = None if args.pool_padding else tok.pad_token_id
    base = embed(loaded.model, test, pad_id)
    example = test[0]
    print("| method | params removed | mean cosine | prune s |")
    print("|---|---|---|---|")
    methods = {
        "l2-uniform": dict(importance="l2"),
        "activation-uniform": dict(importance="activation", calibration=calib),
        "fluctuation-recon-uniform": dict(importance="fluctuation", calibration=calib, reconstruct=True),
        "obs-recon-uniform": dict(importance="obs", calibration=calib, reconstruct=True),
        # Same share of the groups' parameters, spread by measured per-layer output distortion.
        "fluctuation-recon-sensitivity": dict(importance="fluctuation", calibration=calib, reconstruct=True,
                                              allocation="sensitivity",
                                              sensitivity=SensitivityConfig(batches=args.sensitivity_batches)
                                              if args.sensitivity_batches else None),
        # Distillation of the hidden states (relative MSE) on the calibration lines: the first recipe
        # tried (64 AdamW steps of one line each), then RecoveryConfig's defaults (150 steps of 8 lines).
        "fluctuation-recon-recover64": dict(importance="fluctuation", calibration=calib, reconstruct=True,
                                            recover=RecoveryConfig(steps=64, lr=1e-4, batch_size=1)),
        "fluctuation-recon-recover": dict(importance="fluctuation", calibration=calib, reconstruct=True,
                                          recover=RecoveryConfig()),
        "fluctuation-recon-sensitivity-recover": dict(importance="fluctuation", calibration=calib, reconstruct=True,
                                                      allocation="sensitivity", recover=RecoveryConfig(),
                                                      sensitivity=SensitivityConfig(batches=args.sensitivity_batches)
                                                      if args.sensitivity_batches else None),
    }
    for name in args.methods.split(","):
        options = methods[name]
        t = time.perf_counter()
        result = prunec.prune(loaded.model, example, ratio=args.ratio, kinds=("channels", "heads"), **options)
        seconds = time.perf_counter() - t
        cos = F.cosine_similarity(base, embed(result.module, test, pad_id), dim=1).mean().item()
        print(f"| {name} | {result.removed_fraction:.1%} | {cos:.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
