"""`prunec prune`: prune a model and write the pruned program, a HF directory and a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prunec.cli.common import app, clean_errors, out, progress_bar
from prunec.distributed import init_from_environment, is_main_process
from prunec.models import load_model
from prunec.output import atomic_output_dir, check_output
from prunec.pipeline import PruneJob, parse_widths, run_pruning, write_prune_outputs


# Streaming holds the hidden states of every calibration sample between blocks (float32, twice):
# 32 x 512 tokens of a 4096-wide model is 0.5 GiB, a 512-sample default would be 8 GiB.
STREAM_CALIB_SAMPLES = 32


@app.command("prune")
@clean_errors
def prune_cmd(
    model: str = typer.Argument(..., help="HF directory, .gguf, .pt2, package.module:factory, or a short name."),
    output: Path = typer.Option(..., "-o", "--output", help="Output directory (must not exist unless --force)."),
    ratio: float = typer.Option(0.3, help="Fraction of each prunable group's units to remove, in [0, 1)."),
    budget: Optional[str] = typer.Option(None, help="Instead of --ratio: params=0.8 keeps 80% of the non-embedding "
                                         "parameters; flops=0.7 keeps 70% of the FLOPs of one forward pass."),
    kinds: str = typer.Option("auto", help="Comma-separated kinds: channels,heads,residual,head_dim; auto: "
                              "channels with --calib (the measured best LLM recipe), else channels,heads,residual."),
    width: list[str] = typer.Option([], help="Explicit target width per kind, e.g. --width channels=1152 --width heads=6."),
    ffn: Optional[int] = typer.Option(None, help="Target FFN width of every layer (= --width channels=N)."),
    heads: Optional[int] = typer.Option(None, help="Target attention heads of every layer (= --width heads=N)."),
    round_to: int = typer.Option(1, "--round-to", help="Round every pruned channel/residual group's kept width to a "
                                 "multiple of N: the width a runtime's kernels want (llama.cpp: 32 for Q8_0/Q4_0, "
                                 "256 for K-quants; ONNX Runtime int4: its block size, 32)."),
    drop_blocks: int = typer.Option(0, help="First remove this many decoder blocks, lowest block influence first."),
    importance: str = typer.Option("auto", help="l1, l2, random, activation, fluctuation, taylor; auto: fluctuation with --calib, else l2."),
    allocation: str = typer.Option("uniform", help="uniform, global, knapsack, or sensitivity (measured per-layer loss; needs --calib)."),
    calib: Optional[Path] = typer.Option(None, help="Calibration data: text, JSONL ({\"text\": ...}) or .npz."),
    calib_samples: Optional[int] = typer.Option(None, help="Number of calibration samples (at most; a short file gives fewer); "
                                                "default 512, 32 with --stream (which keeps every sample's hidden state)."),
    calib_seq_len: Optional[int] = typer.Option(None, help="Tokens per calibration sample (text); default 512, or the model's maximum if smaller."),
    reconstruct: Optional[bool] = typer.Option(None, help="Least-squares refit of layers that lose inputs (default: on with --calib)."),
    bias_compensation: bool = typer.Option(False, help="Fold removed inputs' mean into biases (implied by --reconstruct)."),
    recover: bool = typer.Option(False, help="Distil the pruned model from the original on the calibration data."),
    recover_steps: int = typer.Option(150, help="Optimizer steps of --recover."),
    recover_lr: Optional[float] = typer.Option(None, help="Peak learning rate of --recover (warm-up, then cosine; default 1e-4, 5e-4 with --lora-rank)."),
    recover_batch: int = typer.Option(8, help="Windows per optimizer step of --recover (gradients accumulated)."),
    recover_data: Optional[Path] = typer.Option(None, help="Text (or JSONL) to distil on; default: the --calib file."),
    recover_samples: Optional[int] = typer.Option(None, help="Windows of --recover-data (or --calib) to distil on; default: --calib-samples."),
    device: str = typer.Option("auto", help="Where --recover trains: auto (a CUDA GPU when present), cpu, cuda[:N]."),
    lora_rank: int = typer.Option(0, help="With --recover: train rank-R LoRA adapters (merged afterwards) instead of all weights."),
    recover_precision: str = typer.Option("fp32", help="With --recover: fp32, or bf16 (autocast matrix products, output "
                                          "head and weights in float32; faster on CPUs with AMX/AVX-512 BF16 and on GPUs)."),
    recover_micro_batch: Optional[int] = typer.Option(None, help="With --recover: windows per forward pass (stacked, same "
                                                      "step); default: all of a step's on a GPU when the model rebuilds "
                                                      "as its Hugging Face class, else 1."),
    recover_every_step: bool = typer.Option(False, help="With --recover and --steps N: distil after every step, "
                                            "before its held-out evaluation, instead of once at the end."),
    steps: int = typer.Option(1, help="Reach the budget in this many steps, evaluating on held-out calibration data."),
    max_step_regression: float = typer.Option(1.5, help="Roll back a step whose held-out metric worsens by more than this factor."),
    ignore: list[str] = typer.Option([], help="Parameter name or module prefix to leave untouched (repeatable)."),
    seq_len: int = typer.Option(16, help="Sequence length of the example input for text models (without --calib)."),
    stream: bool = typer.Option(False, help="Prune a sharded safetensors LLaMA-family checkpoint block by block "
                                "(memory: one block + calibration activations); writes a HF directory."),
    static_shapes: bool = typer.Option(False, "--static-shapes", help="Pin batch and sequence length/resolution to the "
                                       "example's; by default model.pt2 accepts any the model does."),
    force: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code from the model files to run (full pickles, Hugging Face custom code). Only for files you trust."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Prune MODEL (by --ratio per group, or to a --budget) and write the pruned program and a report.

    Under torchrun, the calibration batches are shared out over the processes and the statistics
    all-reduced; rank 0 writes the outputs."""
    init_from_environment()
    if calib_samples is None:
        calib_samples = STREAM_CALIB_SAMPLES if stream else PruneJob.calib_samples
    job = PruneJob(ratio=ratio, budget=budget, kinds=kinds, widths=parse_widths(width, ffn=ffn, heads=heads),
                   importance=importance, allocation=allocation, calib=calib, calib_samples=calib_samples,
                   calib_seq_len=calib_seq_len, reconstruct=reconstruct, bias_compensation=bias_compensation,
                   recover=recover, recover_steps=recover_steps, recover_lr=recover_lr, lora_rank=lora_rank,
                   recover_batch=recover_batch, recover_data=recover_data, recover_samples=recover_samples,
                   device=device, recover_precision=recover_precision, recover_every_step=recover_every_step,
                   recover_micro_batch=recover_micro_batch,
                   steps=steps, drop_blocks=drop_blocks, max_step_regression=max_step_regression,
                   ignore=tuple(ignore), round_to=round_to, static_shapes=static_shapes)
    job = _streaming_job(job) if stream else job.resolved()
    check_output(output, overwrite=force)
    if stream:
        _stream(Path(model), output, job, force=force, seq_len=seq_len, json_out=json_out)
        return
    with progress_bar() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        loaded = load_model(model, seq_len=seq_len, trust_remote_code=trust_remote_code)
        loaded.name = model
        outcome = run_pruning(loaded, job, lambda stage: progress.update(task, description=stage))
        if not is_main_process():
            return  # under torchrun, rank 0 writes and reports
        progress.update(task, description=f"writing {output}")
        with atomic_output_dir(output, overwrite=force) as tmp:
            write_prune_outputs(tmp, outcome, loaded, f"prunec prune {model}")
    result, summary, history = outcome.result, outcome.summary, outcome.history
    flops_before, flops_after = summary["flops_before"], summary["flops_after"]
    diff = summary["max_abs_diff_vs_original"]
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    out.print(f"[bold]{model}[/]: params {result.params_before:,} -> {result.params_after:,} "
              f"(-{result.removed_fraction:.1%}), FLOPs {flops_before:,} -> {flops_after:,} "
              f"(-{1 - flops_after / max(flops_before, 1):.1%})")
    if summary.get("depth"):
        out.print(f"  dropped decoder blocks {summary['depth']['dropped_blocks']} (lowest block influence)")
    for record in history:
        out.print(f"  step {record['step']}: keep {record['keep_target']:.3f} of non-embedding params, "
                  f"held-out metric {record['metric']:.3f} ({'kept' if record['accepted'] else 'rolled back'})")
    out.print(f"pruned {summary['groups_pruned']} groups, {summary['units_removed']} units; "
              f"max |pruned - original| = {diff:.3g}; wrote {output}/model.pt2, report.json, report.md "
              f"in {summary['seconds']:.1f}s")
    hf_dir = summary["hf_directory"]
    if hf_dir.startswith("hf"):
        out.print(f"Hugging Face model (stock from_pretrained loads it): {output}/{hf_dir}")
    elif hf_dir:
        out.print(f"no Hugging Face directory: {hf_dir}")


def _streaming_job(job: PruneJob) -> PruneJob:
    from prunec.streaming import validate_stream_job

    return validate_stream_job(job)


def _stream(checkpoint: Path, output: Path, job: PruneJob, *, force: bool, seq_len: int, json_out: bool) -> None:
    from prunec.streaming import stream_prune

    with progress_bar() as progress:
        task = progress.add_task(f"streaming {checkpoint}", total=None)
        outcome = stream_prune(checkpoint, output, job, force=force, seq_len=seq_len,
                               on_stage=lambda stage: progress.update(task, description=stage))
    if not is_main_process():
        return
    summary = outcome.summary()
    if json_out:
        print(json.dumps({k: v for k, v in summary.items() if k != "removed"}, indent=2))
        return
    out.print(f"[bold]{checkpoint}[/] streamed: params {outcome.params_before:,} -> {outcome.params_after:,} "
              f"(-{summary['params_removed_fraction']:.1%}), {len(outcome.removed)} blocks, "
              f"peak RSS {outcome.peak_rss_bytes / 2**30:.2f} GiB for a {outcome.checkpoint_bytes / 2**30:.2f} GiB "
              f"checkpoint, {outcome.seconds:.1f}s")
    out.print(f"Hugging Face model (stock from_pretrained loads it): {output}; per-block removals in {output}/report.json")
