"""Decode speed of pruned LLM artefacts against their base, in the runtimes edge users deploy with.

Protocol: batch 1, ``--threads`` threads (2), greedy; prefill a ``--prefill``-token prompt (128) and
decode ``--decode`` tokens (128); each artefact is timed ``--rounds`` times (3), base and pruned
*interleaved* round by round so that machine load hits both alike, and the median of the rounds is
reported. Runtimes and types:

* ONNX Runtime GenAI decoder folders (``onnxruntime-genai``'s model builder): fp32 and int4;
* llama.cpp (``llama-cpp-python``) on the GGUF prunec writes: F32, Q8_0 and Q4_0.

The model is pruned once per budget (``prunec.pipeline.run_pruning``, widths rounded to 32, the
multiple llama.cpp's quantisation blocks and ONNX Runtime's int4 blocks want) and lowered to every
artefact from that one result. "bytes" is the artefact's size on disk, a proxy for the bytes read per
decoded token; ``decode x`` is pruned over base tokens/s and ``/bytes`` that speed-up divided by the
base/pruned size ratio (1.0: every removed byte turned into speed).

    python benchmarks/decode.py --calib ../shared/data/wikitext2/wiki.valid.tokens --calib-samples 32
    python benchmarks/decode.py --budgets params=0.8,params=0.5 --runtimes gguf
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from prunec.compile_gguf import bench_gguf
from prunec.genai_bench import bench_decoder
from prunec.generate import GENAI_KIND
from prunec.models import load_model
from prunec.pipeline import PruneJob, run_pruning
from prunec.targets.genai_builder import build_genai
from prunec.targets.gguf_writer import write_gguf

GGUF_TYPES = ("f32", "q8_0", "q4_0")
GENAI_TYPES = {"fp32": "none", "int4": "int4-weights"}


def _artefacts(model, tokenizer, source: Path, label: str, out: Path, runtimes: set[str]):
    """(name, kind, path, bytes) of every artefact of ``model``."""
    rows = []
    if "gguf" in runtimes:
        for gtype in GGUF_TYPES:
            path = out / f"{label}-{gtype}.gguf"
            # A Hugging Face model (the base, or the pruned one rebuilt by to_pretrained, whose RMS norms
            # are already rescaled to its own width): its config is its own, no width correction.
            write_gguf(model.state_dict(), model.config, path, gguf_type=gtype,
                       tokenizer_gguf=source if source.suffix == ".gguf" else None)
            rows.append((f"llama.cpp {gtype}", "gguf", path, path.stat().st_size))
    if "genai" in runtimes:
        for name, quantize in GENAI_TYPES.items():
            folder = out / f"{label}-genai-{name}"
            info = build_genai(model, tokenizer, folder, quantize)
            size = sum(f.stat().st_size for f in folder.iterdir() if f.name.startswith("model.onnx"))
            rows.append((f"ORT GenAI {name}", "genai", (folder, info), size))
    return rows


def _bench(kind: str, path, prefill: int, decode: int, threads: int) -> float:
    if kind == "gguf":
        return bench_gguf(path, prefill=prefill, decode=decode, repeat=1, threads=threads)
    folder, info = path
    manifest = {"artifact": {"kind": GENAI_KIND, "max_context": info.max_context, "chat_template": info.chat_template},
                "threads": threads}
    return bench_decoder(folder, prefill=prefill, decode=decode, repeat=1, threads=threads, manifest=manifest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--budgets", default="params=0.8")
    ap.add_argument("--calib", type=Path, required=True)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--runtimes", default="gguf,genai")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    runtimes = set(args.runtimes.split(","))

    loaded = load_model(args.model)
    source = Path(loaded.source)
    work = Path(tempfile.mkdtemp(prefix="prunec-decode-"))
    # The base goes through the same write-back as the pruned models (ratio 0 is the identity): a model
    # dequantised from GGUF cannot be saved as it is loaded.
    base = run_pruning(loaded, PruneJob(ratio=0.0).resolved()).result.to_pretrained()
    rows = {"base": _artefacts(base, loaded.tokenizer, source, "base", work, runtimes)}
    for budget in args.budgets.split(","):
        start = time.perf_counter()
        outcome = run_pruning(loaded, PruneJob(budget=budget, calib=args.calib, calib_samples=args.calib_samples,
                                               round_to=32).resolved())
        pruned = outcome.result.to_pretrained()
        print(f"pruned {budget} in {time.perf_counter() - start:.0f} s: FFN {pruned.config.intermediate_size}, "
              f"heads {pruned.config.num_attention_heads}")
        rows[budget] = _artefacts(pruned, loaded.tokenizer, source, budget.replace("=", ""), work, runtimes)

    figures: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for i in range(len(rows["base"])):  # interleaved: base then each budget, artefact by artefact
            for label, artefacts in rows.items():
                name, kind, path, _ = artefacts[i]
                figures.setdefault((label, name), []).append(_bench(kind, path, args.prefill, args.decode, args.threads))
        print(f"round {r + 1}/{args.rounds} done")

    def med(label, name, key):
        return statistics.median(f[key] for f in figures[(label, name)])

    print(f"\n{args.model}: batch 1, {args.threads} threads, prefill {args.prefill}, decode {args.decode}, "
          f"median of {args.rounds} interleaved rounds\n")
    print("| artefact | model | bytes | prefill tok/s | decode tok/s | decode x base | bytes base/pruned | x / bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (name, _, _, base_bytes) in enumerate(rows["base"]):
        base_decode = med("base", name, "decode_tokens_per_s")
        for label, artefacts in rows.items():
            size = artefacts[i][3]
            dec = med(label, name, "decode_tokens_per_s")
            speed, shrink = dec / base_decode, base_bytes / size
            print(f"| {name} | {label} | {size / 1e6:.1f} MB | {med(label, name, 'prefill_tokens_per_s'):.1f} | "
                  f"{dec:.1f} | {speed:.2f} | {shrink:.2f} | {speed / shrink:.2f} |")


if __name__ == "__main__":
    main()
