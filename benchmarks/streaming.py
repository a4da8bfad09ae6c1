"""Streaming pruning of a ~1B random-weight LLaMA checkpoint vs in-memory pruning: equality and peak memory.

Protocol:
1. Generate (once, kept in ``--dir``) a random-weight LLaMA-architecture checkpoint with the
   widths of TinyLlama-1.1B (hidden 2048, FFN 5632, 32 heads / 4 KV heads, vocab 32000) and
   ``--blocks`` decoder blocks (default 32: 1.55 B parameters, 2.9 GiB; 22 is TinyLlama's 1.1 B), bf16, written block by block straight into safetensors shards of ``--blocks-per-shard`` blocks
   (the model is never materialised whole).  Weights ~ N(0, 0.02), norms 1.  Calibration: random
   token ids, ``--samples`` x ``--seq-len``, saved as ``calib.npz``.
2. Streamed: ``prunec prune CKPT --stream --calib calib.npz`` (via :func:`prunec.streaming.stream_prune`)
   in a fresh subprocess; its peak RSS is that process's ``ru_maxrss`` (Python + torch baseline
   included).
3. In memory: ``load_model`` + ``run_pruning`` (what ``prunec prune`` runs) with the same options in
   another fresh subprocess, written back with ``to_pretrained`` and saved in bf16.
4. Compare: the units removed per block and kind, and every tensor of the two outputs
   (``torch.equal``); and the streamed peak RSS against a third of the checkpoint's size.
   The parent process does no work of its own (Linux carries a process's peak RSS over fork + exec
   into the child's ``ru_maxrss``), so each figure is its subprocess's own.

    python benchmarks/streaming.py                          # default recipe: fluctuation + reconstruction
    python benchmarks/streaming.py --no-reconstruct         # fluctuation without the least-squares refit
    python benchmarks/streaming.py --skip-in-memory         # memory only
    python benchmarks/streaming.py --blocks 2 --skip-in-memory --stages   # where a block's peak comes from
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)


def generate(directory: Path, blocks: int, blocks_per_shard: int, samples: int, seq_len: int) -> None:
    import numpy as np
    import torch
    from transformers import LlamaConfig

    from prunec.checkpoint import ShardedWriter

    directory.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**dict(SHAPE, num_hidden_layers=blocks), architectures=["LlamaForCausalLM"], dtype="bfloat16")
    h, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)

    def block(i: int) -> dict[str, torch.Tensor]:
        p = f"model.layers.{i}."
        return {p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
                p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
                p + "mlp.gate_proj.weight": rand(f, h), p + "mlp.up_proj.weight": rand(f, h),
                p + "mlp.down_proj.weight": rand(h, f),
                p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16)}

    groups = [list(range(s, min(s + blocks_per_shard, n))) for s in range(0, n, blocks_per_shard)]
    writer = ShardedWriter(directory, len(groups))
    for k, blocks in enumerate(groups):
        tensors: dict[str, torch.Tensor] = {}
        if k == 0:
            tensors["model.embed_tokens.weight"] = rand(config.vocab_size, h)
        for i in blocks:
            tensors.update(block(i))
        if k == len(groups) - 1:
            tensors["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
            tensors["lm_head.weight"] = rand(config.vocab_size, h)
        writer.write(tensors)
        del tensors
    writer.finish()
    config.save_pretrained(directory)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (samples, seq_len))
    np.savez(directory / "calib.npz", ids)


def _job(args: argparse.Namespace):
    from prunec.pipeline import PruneJob

    return PruneJob(ratio=args.ratio, kinds=args.kinds, importance=args.importance, calib=args.dir / "calib.npz",
                    calib_samples=args.samples, reconstruct=not args.no_reconstruct)


class StageMemory:
    """Peak resident memory per stage of ``stream_prune`` (its ``on_stage`` marks): a thread samples
    /proc/self/statm every millisecond, and ``ru_maxrss`` read at each mark says in which stage the
    process's peak was reached (sampling can miss a spike; ``ru_maxrss`` cannot)."""

    def __init__(self) -> None:
        import os
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.stage = "start"
        self.rows: list[list] = [["start", 0, 0]]  # stage, sampled peak, ru_maxrss at its end
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * self.page
            row = self.rows[-1]
            row[1] = max(row[1], rss)
            time.sleep(0.001)

    def __call__(self, stage: str) -> None:
        self.rows[-1][2] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.rows.append([stage, 0, 0])

    def table(self) -> list[dict]:
        self("end")
        return [{"stage": s, "sampled_peak_bytes": p, "ru_maxrss_bytes": m} for s, p, m in self.rows[:-1]]


def child_stream(args: argparse.Namespace) -> dict:
    from prunec.streaming import stream_prune

    stages = StageMemory() if args.stages else None
    outcome = stream_prune(args.dir, args.out / "streamed", _job(args), force=True,
                           on_stage=stages or (lambda _: None))
    return {"stages": stages.table() if stages else [],
            "seconds": round(outcome.seconds, 1), "peak_rss_bytes": outcome.peak_rss_bytes,
            "checkpoint_bytes": outcome.checkpoint_bytes, "params_before": outcome.params_before,
            "params_after": outcome.params_after,
            "removed": {str(i): {k: list(v) for k, v in kinds.items()} for i, kinds in outcome.removed.items()}}


def child_memory(args: argparse.Namespace) -> dict:
    import re
    import shutil

    import torch

    from prunec.models import load_model
    from prunec.pipeline import run_pruning

    start = time.perf_counter()
    outcome = run_pruning(load_model(str(args.dir)), _job(args))
    removed: dict[str, dict[str, list[int]]] = {}
    for gid, units in outcome.result.removed.items():
        group = outcome.result.analysis.groups[gid]
        block = re.search(r"model\.layers\.(\d+)\.", group.label).group(1)
        removed.setdefault(block, {})[group.kind] = list(units)
    model = outcome.result.to_pretrained().to(torch.bfloat16)
    shutil.rmtree(args.out / "in_memory", ignore_errors=True)
    model.save_pretrained(args.out / "in_memory")
    return {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "removed": removed}


def compare(streamed: Path, in_memory: Path) -> tuple[int, list[str]]:
    import torch

    from prunec.checkpoint import ShardedReader

    a, b = ShardedReader(streamed), ShardedReader(in_memory)
    names = sorted(set(a.names) | set(b.names))
    differing = [n for n in names if n not in a.files or n not in b.files
                 or not torch.equal(a.load([n])[n], b.load([n])[n])]
    return len(names), differing


def _run_child(mode: str, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, *argv], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=None, help="checkpoint directory (default /tmp/prunec-stream-bench/ckptN)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/prunec-stream-bench/out"))
    parser.add_argument("--blocks", type=int, default=32, help="decoder blocks (22: TinyLlama-1.1B; 32: 1.55B)")
    parser.add_argument("--blocks-per-shard", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--kinds", default="channels")
    parser.add_argument("--importance", default="fluctuation")
    parser.add_argument("--no-reconstruct", action="store_true")
    parser.add_argument("--skip-in-memory", action="store_true")
    parser.add_argument("--stages", action="store_true",
                        help="print the streamed run's peak resident memory per stage of each block")
    parser.add_argument("--child", choices=["generate", "stream", "memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dir = args.dir or Path(f"/tmp/prunec-stream-bench/ckpt{args.blocks}")
    if args.child == "generate":
        generate(args.dir, args.blocks, args.blocks_per_shard, args.samples, args.seq_len)
        print(json.dumps({}))
        return
    if args.child:
        print(json.dumps(child_stream(args) if args.child == "stream" else child_memory(args)))
        return
    if not (args.dir / "config.json").exists():
        # In a subprocess too: Linux carries a process's peak RSS across fork + exec, so a parent
        # that had generated the checkpoint would pass its peak on to the measured children.
        t = time.perf_counter()
        _run_child("generate", sys.argv[1:])
        print(f"generated {args.dir} in {time.perf_counter() - t:.1f}s")
    argv = [a for a in sys.argv[1:]]
    args.out.mkdir(parents=True, exist_ok=True)
    s = _run_child("stream", argv)
    size = s["checkpoint_bytes"]
    print(f"checkpoint: {s['params_before'] / 1e9:.3f} B params, {size / 2**30:.2f} GiB on disk (bf16); "
          f"options: ratio {args.ratio}, kinds {args.kinds}, importance {args.importance}, "
          f"reconstruct {not args.no_reconstruct}, calibration {args.samples} x {args.seq_len} tokens")
    print(f"streamed : {s['seconds']:7.1f} s, peak RSS {s['peak_rss_bytes'] / 2**30:.2f} GiB "
          f"= {s['peak_rss_bytes'] / size:.3f} of the checkpoint (goal < 0.333: "
          f"{'met' if s['peak_rss_bytes'] < size / 3 else 'MISSED'}); params after {s['params_after'] / 1e9:.3f} B")
    previous = 0
    for row in s["stages"]:
        grew = row["ru_maxrss_bytes"] > previous
        previous = row["ru_maxrss_bytes"]
        print(f"  {row['stage']:34s} sampled peak {row['sampled_peak_bytes'] / 2**30:6.3f} GiB"
              f"{'   <- process peak rose to ' + format(row['ru_maxrss_bytes'] / 2**30, '.3f') + ' GiB' if grew else ''}")
    if args.skip_in_memory:
        return
    m = _run_child("memory", argv)
    print(f"in memory: {m['seconds']:7.1f} s, peak RSS {m['peak_rss_bytes'] / 2**30:.2f} GiB")
    same_units = s["removed"] == m["removed"]
    n, differing = compare(args.out / "streamed", args.out / "in_memory")
    print(f"removed units per block equal: {same_units} ({sum(len(u) for b in s['removed'].values() for u in b.values())} units "
          f"in {len(s['removed'])} blocks); tensors bitwise equal: {n - len(differing)}/{n}"
          + (f" (differ: {differing[:5]})" if differing else ""))


if __name__ == "__main__":
    main()
