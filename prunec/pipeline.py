"""The pruning pipeline behind ``prunec prune`` and ``prunec compile``, as a reusable function.

``run_pruning(loaded, PruneJob(...))`` resolves the job's defaults, reads calibration data,
prunes (in one shot or a gradual schedule), optionally recovers, verifies and summarises.
``write_prune_outputs`` writes ``model.pt2``, the Hugging Face directory and the reports into a
directory (the caller makes it atomic).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from prunec.analysis.groups import DEFAULT_KINDS
from prunec.budget import Budget
from prunec.calibration import CalibrationConfig, check_data_file, load_calibration
from prunec.devices import resolve_device
from prunec.eager_recovery import distill_eager, rebuild_eager
from prunec.errors import ConfigError, TraceError
from prunec.evaluate import perplexity
from prunec.metrics import count_flops
from prunec.mixed_precision import check_precision
from prunec.models import LoadedModel
from prunec.module import export_program
from prunec.prune import PruneResult, prune, validate_kinds, validate_ratio
from prunec.recovery import RecoveryConfig, distill, stackable_kwargs
from prunec.report import analysis_dict, markdown_report
from prunec.schedule import ScheduleConfig, gradual_prune
from prunec.testing import max_abs_diff


@dataclass(frozen=True)
class PruneJob:
    """Everything ``prunec prune`` lets a user choose; ``"auto"`` values resolve in :meth:`resolved`."""

    ratio: float = 0.3
    budget: str | None = None
    kinds: str = "auto"
    widths: tuple[tuple[str, int], ...] = ()
    importance: str = "auto"
    allocation: str = "uniform"
    calib: Path | None = None
    # 512 windows of 512 tokens (262k tokens, Wanda's 128 x 2048): the least-squares refit needs
    # far more samples than its widths; on SmolLM2 at params=0.8, 32/128/512 windows gave
    # perplexity 56.2/51.5/47.3 (benchmarks/llm_ppl.py).
    calib_samples: int = 512
    calib_seq_len: int | None = None  # None: 512, or the model's max_position_embeddings if smaller
    reconstruct: bool | None = None
    bias_compensation: bool = False
    recover: bool = False
    recover_steps: int = 150
    recover_lr: float | None = None  # 1e-4 for all weights, 5e-4 with LoRA
    recover_batch: int = 8           # windows per optimizer step (gradient accumulation)
    recover_data: Path | None = None  # text for the fine-tune; default: the calibration file
    recover_samples: int | None = None  # windows of it; default: as many as calibration
    device: str = "auto"             # where recovery trains: a CUDA GPU when present
    recover_precision: str = "fp32"  # bf16: autocast matrix products (head and weights stay float32)
    recover_every_step: bool = False  # with steps > 1: distil after every step, before its evaluation
    # Windows per forward pass of recovery. None: the whole step's on a GPU when the pruned model
    # rebuilds as its Hugging Face class (8x faster per window on an H100), else 1 (on the CPU the
    # traced graph's single windows were faster than the eager model's stacked ones).
    recover_micro_batch: int | None = None
    lora_rank: int = 0
    drop_blocks: int = 0
    steps: int = 1
    max_step_regression: float = 1.5
    ignore: tuple[str, ...] = ()
    round_to: int = 1               # round kept channel/residual widths to this multiple (a target's)
    static_shapes: bool = False     # pin batch and length to the example's (default: dynamic where the model allows)

    def resolved(self) -> "PruneJob":
        """Fill in the ``auto`` defaults and validate combinations (raises :class:`ConfigError`)."""
        validate_ratio(self.ratio)
        job = self
        if job.kinds == "auto":
            # Measured on SmolLM2-135M (benchmarks/llm_ppl.py): FFN units alone beat FFN + heads at the
            # same parameter budget once layers are refitted; heads come in coarse steps (3 per KV group).
            job = replace(job, kinds="channels" if job.calib else ",".join(DEFAULT_KINDS))
        if job.importance == "auto":
            job = replace(job, importance="fluctuation" if job.calib else "l2")
        if job.recover_lr is None:
            job = replace(job, recover_lr=5e-4 if job.lora_rank else 1e-4)
        if job.reconstruct is None:
            job = replace(job, reconstruct=bool(job.calib))
        job.kind_tuple  # validates
        if job.budget:
            Budget.parse(job.budget)
        if job.steps > 1 and job.budget is None:
            raise ConfigError("--steps needs a --budget (e.g. --budget params=0.8)")
        if job.recover and not job.calib:
            raise ConfigError("--recover needs calibration data (--calib FILE)")
        if (job.recover_data or job.recover_samples or job.recover_precision != "fp32") and not job.recover:
            raise ConfigError("--recover-data/--recover-samples/--recover-precision apply to recovery: add --recover")
        if job.recover_every_step and not (job.recover and job.steps > 1):
            raise ConfigError("--recover-every-step distils between the steps of a schedule: "
                              "add --recover and --steps N (N > 1)")
        if job.recover_micro_batch is not None and not job.recover:
            raise ConfigError("--recover-micro-batch applies to recovery: add --recover")
        if job.recover_micro_batch is not None and not 1 <= job.recover_micro_batch <= job.recover_batch:
            raise ConfigError(f"--recover-micro-batch must be between 1 and --recover-batch ({job.recover_batch}), "
                              f"got {job.recover_micro_batch}")
        if job.recover_samples is not None and job.recover_samples < 1:
            raise ConfigError(f"--recover-samples must be >= 1, got {job.recover_samples}")
        if job.recover_steps < 1 or job.recover_batch < 1:
            raise ConfigError("--recover-steps and --recover-batch must be >= 1")
        # A GPU asked for but absent, or a precision it cannot run, fails before any work.
        check_precision(job.recover_precision, resolve_device(job.device))
        if job.round_to < 1:
            raise ConfigError("round_to must be >= 1")
        if job.steps > 1 and job.round_to > 1:
            raise ConfigError("width rounding works with one-shot pruning, not with --steps")
        if job.steps > 1 and job.widths:
            raise ConfigError("--steps works with --budget, not with --width")
        if job.steps > 1 and job.budget and Budget.parse(job.budget).metric != "params":
            raise ConfigError("--steps needs a params budget (--budget params=FRACTION)")
        if job.budget and job.widths:
            raise ConfigError("give either --budget or explicit widths (--ffn/--heads/--width), not both")
        if job.lora_rank < 0 or (job.lora_rank and not job.recover):
            raise ConfigError("--lora-rank R (R >= 1) applies to recovery: add --recover")
        if job.drop_blocks < 0:
            raise ConfigError(f"--drop-blocks must be >= 0, got {job.drop_blocks}")
        if job.drop_blocks and not job.calib:
            raise ConfigError("--drop-blocks ranks blocks on calibration data: add --calib FILE")
        # Files last: a contradiction between options is the more useful message.
        if job.calib_samples < 1:
            raise ConfigError(f"--calib-samples must be >= 1, got {job.calib_samples}")
        if job.calib_seq_len is not None and job.calib_seq_len < 2:
            raise ConfigError(f"--calib-seq-len must be >= 2, got {job.calib_seq_len}")
        if job.calib is not None:
            check_data_file(job.calib, "calibration file (--calib)")
        if job.recover_data is not None:
            check_data_file(job.recover_data, "recovery data (--recover-data)")
        return job

    @property
    def kind_tuple(self) -> tuple[str, ...]:
        return validate_kinds(tuple(k.strip() for k in self.kinds.split(",") if k.strip()))


def parse_widths(items: list[str] | tuple[str, ...], *, ffn: int | None = None,
                 heads: int | None = None) -> tuple[tuple[str, int], ...]:
    """``["channels=1152", "heads=6"]`` -> ``(("channels", 1152), ("heads", 6))``.

    ``ffn`` and ``heads`` are the CLI's ``--ffn N`` / ``--heads N`` aliases.
    """
    widths: dict[str, int] = {}
    for item in items:
        kind, _, value = item.partition("=")
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--width '{item}' is not KIND=UNITS with UNITS >= 1, e.g. --width channels=1152")
        widths[kind] = int(value)
    for kind, value, flag in (("channels", ffn, "--ffn"), ("heads", heads, "--heads")):
        if value is None:
            continue
        if value < 1:
            raise ConfigError(f"{flag} {value}: a width must be at least 1 unit")
        if widths.get(kind, value) != value:
            raise ConfigError(f"{flag} {value} contradicts --width {kind}={widths[kind]}; give one of them")
        widths[kind] = value
    return tuple(widths.items())


@dataclass
class PruneOutcome:
    """A finished pruning run: the result, the inputs it was traced with, and its summary."""

    result: PruneResult
    args: tuple
    kwargs: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _reference_outputs(loaded: LoadedModel, args: tuple, kwargs: dict[str, Any]) -> Any:
    """The unpruned model's outputs; a model that fails on its example inputs is reported, not crashed on."""
    try:
        with torch.no_grad():
            return loaded.model(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure here means inputs and model disagree
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise TraceError(f"{loaded.name or 'the model'} fails on its example inputs ({type(exc).__name__}: {message}); "
                         "pass example inputs (or --calib data) of the shape the model expects") from exc


def run_pruning(loaded: LoadedModel, job: PruneJob, on_stage: Callable[[str], None] = lambda _: None) -> PruneOutcome:
    """Prune ``loaded.model`` as ``job`` says; ``on_stage`` receives a short description of each stage."""
    start = time.perf_counter()
    job = job.resolved()
    if any(p.device.type == "meta" for p in loaded.model.parameters()):
        raise ConfigError(f"{loaded.name or 'the model'} has no weights (only a config); pruning needs real weights")
    args, kwargs = loaded.args, loaded.kwargs
    calibration = holdout = None
    if job.calib is not None:
        on_stage(f"reading calibration data {job.calib}")
        batches = load_calibration(job.calib, loaded.tokenizer,
                                   CalibrationConfig(job.calib_samples, calibration_seq_len(job, loaded.model)))
        # The traced graph has static shapes: trace with the calibration batch shape.
        args = batches[0]
        calibration, holdout = batches, []
        if job.steps > 1:
            # Held-out batches must not overlap the calibration batches.
            if len(batches) < 2:
                raise ConfigError("--steps needs held-out data: give --calib at least 2 samples")
            cut = max(1, len(batches) * 4 // 5)
            calibration, holdout = batches[:cut], batches[cut:]
    reference = _reference_outputs(loaded, args, kwargs)
    flops_before = count_flops(loaded.model, args, kwargs)
    budget = Budget.parse(job.budget) if job.budget else None
    model, depth = loaded.model, None
    if job.drop_blocks:
        on_stage(f"ranking decoder blocks by influence, dropping {job.drop_blocks}")
        model, depth, budget = _drop_blocks(loaded.model, job.drop_blocks, calibration, args, kwargs, budget)
    options = dict(kinds=job.kind_tuple, importance=job.importance, allocation=job.allocation, ignore=job.ignore,
                   calibration=calibration, reconstruct=job.reconstruct, bias_compensation=job.bias_compensation,
                   dynamic=not job.static_shapes)
    history: list[dict[str, Any]] = []
    recovery, recover = _recovery(job, loaded, calibration, kwargs, on_stage)
    if job.steps > 1:
        if not holdout:
            raise ConfigError("--steps needs held-out data: give --calib at least 2 samples")
        on_stage(f"pruning in {job.steps} steps")
        evaluate = functools.partial(_heldout_perplexity, holdout=holdout)
        scheduled = gradual_prune(model, args, kwargs, budget=budget, evaluate=evaluate,
                                  schedule=ScheduleConfig(job.steps, job.max_step_regression),
                                  recover=recover if job.recover_every_step else None, **options)
        history = [vars(r) for r in scheduled.history]
        if scheduled.result is None:
            raise ConfigError(f"the first step already regressed the held-out metric beyond "
                              f"{job.max_step_regression}x; use a smaller budget or more steps")
        result = scheduled.result
    else:
        on_stage("tracing, analysing, pruning")
        result = prune(model, args, kwargs, ratio=0.0 if budget == NOTHING_MORE else job.ratio,
                       budget=None if budget == NOTHING_MORE else budget, widths=dict(job.widths) or None,
                       round_to=job.round_to, **options)
    if depth is not None:
        # Sizes before pruning are the original model's (blocks included).
        result.params_before = sum(p.numel() for p in loaded.model.parameters())
        result.non_embedding_before = _non_embedding(loaded.model)
    if recover is not None and not job.recover_every_step:
        recover(result.module)  # once, after the whole schedule
    if recover is not None:
        result.recovery_losses = recover.losses
        recovery["micro_batch"] = max(recover.micro_batches, default=1)
    on_stage("verifying")
    with torch.no_grad():
        pruned_out = result.module(*args, **kwargs)
    diff = max_abs_diff(reference, pruned_out)
    flops_after = count_flops(result.module, args, kwargs)
    summary = {
        "model": loaded.name,
        "ratio": None if budget else job.ratio,
        "budget": job.budget,
        "kinds": list(job.kind_tuple),
        "importance": job.importance,
        "allocation": job.allocation,
        "calibration": str(job.calib) if job.calib else None,
        "reconstruct": job.reconstruct,
        "recovery_losses": [round(v, 4) for v in result.recovery_losses],
        "recovery": recovery,
        "steps": job.steps,
        "schedule": history,
        "depth": depth,
        "params_before": result.params_before,
        "params_after": result.params_after,
        "dynamic_dims": {name: list(dims) for name, dims in result.dynamic_dims.items()},
        "static_reason": result.static_reason,
        "params_removed_fraction": round(result.removed_fraction, 4),
        "non_embedding_params_before": result.non_embedding_before,
        "non_embedding_params_after": result.non_embedding_after,
        "flops_before": flops_before,
        "flops_after": flops_after,
        "groups_pruned": len(result.removed),
        "units_removed": sum(len(u) for u in result.removed.values()),
        "max_abs_diff_vs_original": diff,
        "analysis": result.analysis.summary(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return PruneOutcome(result, args, kwargs, summary, history)


DEFAULT_CALIB_SEQ_LEN = 512


def calibration_seq_len(job: PruneJob, model: torch.nn.Module | None = None, config: Any = None) -> int:
    """Tokens per calibration window: the job's, else 512 capped by the model's
    ``max_position_embeddings`` (from ``config`` or ``model.config``)."""
    if job.calib_seq_len is not None:
        return job.calib_seq_len
    config = config if config is not None else getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    return min(DEFAULT_CALIB_SEQ_LEN, limit) if isinstance(limit, int) and limit > 0 else DEFAULT_CALIB_SEQ_LEN


class _Recover:
    """Distils a pruned module from the original in place, keeping every step's losses."""

    def __init__(self, job: PruneJob, loaded: LoadedModel, windows: list[tuple], kwargs: dict[str, Any],
                 on_stage: Callable[[str], None], note: str) -> None:
        self.config = RecoveryConfig(steps=job.recover_steps, lr=job.recover_lr, lora_rank=job.lora_rank,
                                     batch_size=job.recover_batch, device=job.device, precision=job.recover_precision,
                                     micro_batch=job.recover_micro_batch or 1)
        # Auto: stack the step's windows on a GPU when the model can be rebuilt eagerly.
        self.auto = job.recover_micro_batch is None and resolve_device(job.device).type == "cuda"
        self.teacher, self.windows, self.kwargs, self.on_stage, self.note = loaded.model, windows, kwargs, on_stage, note
        self.losses: list[float] = []
        self.micro_batches: list[int] = []  # windows per pass, for each time it ran

    def __call__(self, module: torch.nn.Module) -> None:
        self.on_stage(f"recovering ({self.note})")
        config, eager = self.config, None
        if self.auto and config.batch_size > 1 and stackable_kwargs(self.kwargs):
            try:
                eager = rebuild_eager(module, self.teacher)
                config = replace(config, micro_batch=config.batch_size)
            except ConfigError:
                pass  # no eager model (non-uniform widths, another family): one window per pass
        self.micro_batches.append(config.micro_batch)
        if config.micro_batch > 1:
            self.losses += distill_eager(module, self.teacher, self.windows, config, self.kwargs, eager)
        else:
            self.losses += distill(module, self.teacher, self.windows, config, self.kwargs)


def _recovery(job: PruneJob, loaded: LoadedModel, calibration: list[tuple] | None, kwargs: dict[str, Any],
              on_stage: Callable[[str], None]) -> tuple[dict[str, Any] | None, _Recover | None]:
    """The report's recovery settings and the callable that recovers a module (``None`` without --recover)."""
    if not job.recover:
        return None, None
    windows = _recovery_windows(job, loaded, calibration)
    device = resolve_device(job.device)
    recovery = {"steps": job.recover_steps, "lr": job.recover_lr, "lora_rank": job.lora_rank,
                "batch": job.recover_batch, "data": str(job.recover_data or job.calib),
                "windows": len(windows), "device": str(device), "precision": job.recover_precision,
                "every_step": job.recover_every_step}
    note = (f"{job.recover_steps} distillation steps of {job.recover_batch} on {len(windows)} windows, {device}"
            f"{', LoRA' if job.lora_rank else ''}{', bf16' if job.recover_precision == 'bf16' else ''}")
    return recovery, _Recover(job, loaded, windows, kwargs, on_stage, note)


def _recovery_windows(job: PruneJob, loaded: LoadedModel, calibration: list[tuple]) -> list[tuple]:
    """The windows recovery trains on: the calibration batches unless another file or count is given
    (a different count re-reads the file; the windows keep the calibration sequence length, which
    the traced graph's static shapes require)."""
    if job.recover_data is None and job.recover_samples in (None, len(calibration)):
        return calibration
    source = job.recover_data or job.calib
    return load_calibration(source, loaded.tokenizer,
                            CalibrationConfig(job.recover_samples or job.calib_samples,
                                              calibration_seq_len(job, loaded.model)))


def write_prune_outputs(directory: Path, outcome: PruneOutcome, loaded: LoadedModel, title: str) -> None:
    """Write ``model.pt2``, ``hf/`` (when the family supports it), ``report.json`` and ``report.md``."""
    result = outcome.result
    # The program keeps the dims the pruning trace kept dynamic (batch, length, resolution).
    ep = export_program(result.module, outcome.args, outcome.kwargs, dynamic=bool(result.dynamic_dims))
    torch.export.save(ep, str(directory / "model.pt2"))
    outcome.summary["hf_directory"] = write_pretrained(result, loaded, directory / "hf")
    report = analysis_dict(result.analysis)
    report["removed"] = {str(k): list(v) for k, v in result.removed.items()}
    report["summary"] = outcome.summary
    (directory / "report.json").write_text(json.dumps(report, indent=2))
    (directory / "report.md").write_text(markdown_report(title, outcome.summary, result.analysis, result.removed))


# A budget that dropping blocks already met: prune no widths.
NOTHING_MORE = Budget("params", 1.0)


def _non_embedding(model: torch.nn.Module) -> int:
    embed = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    return sum(p.numel() for p in model.parameters() if p is not embed)


def _drop_blocks(model: torch.nn.Module, n: int, batches: list[tuple], args: tuple, kwargs: dict[str, Any],
                 budget: Budget | None) -> tuple[torch.nn.Module, dict[str, Any], Budget | None]:
    """Drop the ``n`` least influential blocks; return the model, what was done, and the budget left
    for width pruning (the user's budget is relative to the original model)."""
    from prunec.depth import block_influence, drop_blocks, least_influential

    influence = block_influence(model, batches, kwargs)
    dropped = least_influential(influence, n)
    shallower = drop_blocks(model, dropped)
    info = {"dropped_blocks": dropped, "block_influence": [round(float(v), 5) for v in influence]}
    if budget is None:
        return shallower, info, None
    if budget.metric == "params":
        have = _non_embedding(shallower) / _non_embedding(model)
    else:
        have = count_flops(shallower, args, kwargs) / count_flops(model, args, kwargs)
    info[f"{budget.metric}_kept_by_depth"] = round(have, 4)
    keep = budget.keep / have
    return shallower, info, NOTHING_MORE if keep >= 1.0 else Budget(budget.metric, keep)


def _heldout_perplexity(module: torch.nn.Module, holdout: list[tuple]) -> float:
    ids = torch.cat([b[0].reshape(-1) for b in holdout])
    return perplexity(module, ids, window=holdout[0][0].shape[-1], n_windows=len(ids))


def write_pretrained(result: PruneResult, loaded: LoadedModel, directory: Path) -> str:
    """Save the pruned model as a Hugging Face directory when its class can express it.

    Returns ``"hf"`` when written, else the reason it was not (empty for non-HF models).
    """
    from prunec.hf import supported

    if not hasattr(loaded.model, "save_pretrained"):
        return ""
    if not supported(loaded.model):
        return f"{type(loaded.model).__name__} is not a supported family for write-back"
    try:
        model = result.to_pretrained()
    except ConfigError as exc:
        return str(exc)
    model.save_pretrained(directory)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(directory)
    return "hf"
