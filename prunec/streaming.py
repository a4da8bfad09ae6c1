"""Streaming pruning: prune a sharded safetensors LLaMA-family checkpoint one decoder block at a time.

Peak memory is about one block plus the calibration hidden states, not the model::

    embed the calibration tokens (the embedding matrix is read once, then freed)
    for each decoder block i:
        read block i's tensors from the shards (memory-mapped, copied, shard closed)
        trace + analyse the block alone (its heads and FFN channel groups)
        run it on the carried hidden states: calibration statistics + its outputs
        score, plan, refit (reconstruction / bias compensation; the weights it does not touch are
            dropped meanwhile and read again), remove: prunec's own passes
        write the pruned block as an output shard; the outputs become the next block's inputs
    copy the final norm and LM head; write config.json (uniform widths) and the index

Statistics of block i are collected on the *unpruned* model's hidden states, exactly as the
in-memory :func:`prunec.prune` collects them on the unpruned traced graph, so for the options
streaming supports (FFN channels and heads, uniform allocation, ``l1``/``l2``/``activation``/
``fluctuation``/``obs`` importance, reconstruction or bias compensation, a ratio or explicit widths)
the removed units and the weights equal the in-memory result's.  The residual (hidden) width
couples every block and needs the whole model's scores; it is not streamed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import resource
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from prunec.analysis.analyze import Analysis
from prunec.attrs import get_path, set_tensor
from prunec.calibration import CalibrationConfig, load_calibration
from prunec.checkpoint import ShardedReader, ShardedWriter
from prunec.distributed import is_main_process, shard_batches
from prunec.errors import ConfigError, ModelLoadError
from prunec.importance import ScoringInputs, get_importance
from prunec.output import atomic_output_dir
from prunec.pipeline import PruneJob, calibration_seq_len
from prunec.prune import analyze, plan_removal, score_groups, select_groups
from prunec.stats import collect_input_stats

# Families whose checkpoints name blocks model.layers.{i}. and whose config the write-back understands.
STREAMABLE_FAMILIES = {"llama", "mistral", "qwen2", "qwen3"}
STREAMABLE_KINDS = ("channels", "heads")
STREAMABLE_IMPORTANCE = ("l1", "l2", "activation", "fluctuation", "obs")
BLOCK_PREFIX = "model.layers."
# Files besides the weights that a Hugging Face directory needs to be loaded and used.
SIDE_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")


@dataclass
class StreamOutcome:
    """What a streaming run did: units removed per block and kind, sizes, time and peak memory."""

    removed: dict[int, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    checkpoint_bytes: int = 0
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"params_before": self.params_before, "params_after": self.params_after,
                "params_removed_fraction": round(1 - self.params_after / max(self.params_before, 1), 4),
                "checkpoint_bytes": self.checkpoint_bytes, "seconds": round(self.seconds, 2),
                "peak_rss_bytes": self.peak_rss_bytes,
                "peak_rss_fraction_of_checkpoint": round(self.peak_rss_bytes / max(self.checkpoint_bytes, 1), 4),
                "intermediate_size": self.config.get("intermediate_size"),
                "num_attention_heads": self.config.get("num_attention_heads"),
                "num_key_value_heads": self.config.get("num_key_value_heads"),
                "removed": {str(i): {k: list(v) for k, v in kinds.items()} for i, kinds in self.removed.items()}}


def validate_stream_job(job: PruneJob) -> PruneJob:
    """The resolved job, or a :class:`ConfigError` naming the option streaming cannot honour.

    ``--kinds auto`` means the block-local kinds: channels with calibration (the in-memory default
    too), channels and heads without."""
    if job.kinds == "auto":
        job = replace(job, kinds="channels" if job.calib else ",".join(STREAMABLE_KINDS))
    job = job.resolved()
    unsupported = [k for k in job.kind_tuple if k not in STREAMABLE_KINDS]
    if unsupported:
        raise ConfigError(f"--stream prunes block-local kinds {', '.join(STREAMABLE_KINDS)}, not {unsupported}: "
                          "the residual width couples every block; prune it in memory or drop it from --kinds")
    if job.importance not in STREAMABLE_IMPORTANCE:
        raise ConfigError(f"--stream supports importance {', '.join(STREAMABLE_IMPORTANCE)}, not '{job.importance}' "
                          "(taylor needs gradients through the whole model; random is seeded per whole-model group)")
    if job.allocation != "uniform":
        raise ConfigError(f"--stream decides each block alone, so only --allocation uniform works, not '{job.allocation}'")
    for flag, value in (("--budget", job.budget), ("--steps", job.steps > 1), ("--recover", job.recover),
                        ("--ignore", job.ignore), ("--drop-blocks", job.drop_blocks), ("--round-to", job.round_to > 1)):
        if value:
            raise ConfigError(f"{flag} needs the whole model in memory; drop it or prune without --stream")
    return job


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Skeleton:
    """The model class built on the meta device from config.json: block modules to fill one at a time."""

    def __init__(self, directory: Path) -> None:
        import transformers

        try:
            self.config = transformers.AutoConfig.from_pretrained(str(directory))
        except Exception as exc:  # noqa: BLE001 - any unreadable config is one clear error
            raise ModelLoadError(f"cannot read {directory}/config.json: {type(exc).__name__}: {exc}") from None
        if self.config.model_type not in STREAMABLE_FAMILIES:
            raise ConfigError(f"--stream supports {sorted(STREAMABLE_FAMILIES)} checkpoints, not "
                              f"'{self.config.model_type}'; prune it without --stream")
        self.config.use_cache = False
        with torch.device("meta"):
            self.model = transformers.AutoModelForCausalLM.from_config(self.config)
        self.n_blocks = len(self.model.model.layers)

    def rotary(self) -> torch.nn.Module:
        """The rotary embedding module, on the CPU (its inverse frequencies are computed, not stored)."""
        return type(self.model.model.rotary_emb)(config=self.config)

    def block(self, index: int, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
        layer = self.model.model.layers[index]
        layer.load_state_dict(tensors, strict=True, assign=True)
        return layer.eval()

    def release(self, index: int) -> None:
        self.model.model.layers[index].to("meta")


def _block_inputs(skeleton: _Skeleton, reader: Any, batches: list[tuple], dtype: torch.dtype) -> tuple[list[tuple], dict]:
    """Hidden states entering block 0 (one per calibration batch) and the kwargs every block gets.

    The causal mask is materialised as a boolean tensor, as the traced whole model does, so that
    attention runs the same kernel path as in :func:`prunec.prune`.
    """
    # Only the rows of the tokens used are read; an embedding lookup is a copy, so looking up in
    # the stored dtype and casting equals casting the matrix first (as in-memory loading does).
    hidden = [(reader.rows("model.embed_tokens.weight", batch[0]).to(dtype),) for batch in batches]
    b, s = batches[0][0].shape
    position_ids = torch.arange(s).unsqueeze(0)
    with torch.no_grad():
        position_embeddings = skeleton.rotary()(hidden[0][0], position_ids)
    mask = torch.ones(s, s, dtype=torch.bool).tril().expand(b, 1, s, s)
    return hidden, {"attention_mask": mask, "position_embeddings": position_embeddings, "position_ids": position_ids}


def _prune_block(block: torch.nn.Module, hidden: list[tuple], kwargs: dict, job: PruneJob, calibrated: bool,
                 release: Callable[[], None], reload: Callable[[list[str]], dict[str, torch.Tensor]],
                 on_stage: Callable[[str], None] = lambda _: None,
                 ) -> tuple[Analysis, dict[int, tuple[int, ...]], list[Any]]:
    """Trace, analyse, score, refit and shrink one block; returns its analysis, plan and unpruned outputs.

    ``release`` drops the caller's references to the block's tensors once the traced graph holds
    them, so that each original tensor is freed as soon as removal replaces it.  ``reload`` reads
    block parameters again (as first read): the refit runs without the ones it does not touch
    (see :func:`_parked`)."""
    from prunec.passes.bias_compensation import BiasCompensation
    from prunec.passes.reconstruction import LeastSquaresReconstruction
    from prunec.passes.structured_removal import RemovalPlan, StructuredRemoval

    estimator = get_importance(job.importance)
    on_stage("trace")
    analysis = analyze(block, hidden[0], kwargs, keep_interface=True)
    gm = analysis.graph_module
    gm.meta.pop("prunec_exported_program", None)  # it would keep every original tensor alive
    release()
    groups = select_groups(analysis, job.kind_tuple)
    inputs = ScoringInputs({name: get_path(gm, name) for name in analysis.slots})
    outputs: list[Any] = []
    if calibrated and ("activations" in estimator.needs or job.bias_compensation or job.reconstruct):
        # Mirrors prunec.prune: Gram matrices only for the layers that read prunable units.
        wants_gram = job.reconstruct or "gram" in estimator.needs
        readers = {m.name for g in groups for m in g.members if m.dim == 1 and not m.shared} if wants_gram else ()
        on_stage("calibrate")
        inputs.stats = collect_input_stats(gm, hidden, kwargs, covariance_for=readers, outputs=outputs)
    on_stage("score")
    scores = score_groups(analysis, groups, job.importance, inputs)
    removed = plan_removal(analysis, scores, ratio=job.ratio, kinds=job.kind_tuple, allocation=job.allocation,
                           widths=dict(job.widths) or None)
    stats = inputs.stats
    del inputs  # it references the unpruned tensors, which removal should free as it replaces them
    on_stage("refit")
    if (job.reconstruct or job.bias_compensation) and stats is not None:
        with _parked(gm, _refit_parameters(analysis, removed), reload):
            if job.reconstruct:
                LeastSquaresReconstruction(analysis, removed, stats)(gm)
            else:
                BiasCompensation(analysis, removed, stats)(gm)
    del stats  # the refit consumed its Gram matrices; the channel moments are not needed either
    on_stage("remove")
    StructuredRemoval(analysis, RemovalPlan(removed))(gm)
    return analysis, removed, outputs


def _refit_parameters(analysis: Analysis, removed: dict[int, tuple[int, ...]]) -> set[str]:
    """The weights that read removed units, and their linear layers' biases: all that a refit reads or writes."""
    from prunec.passes.bias_compensation import _linear_nodes_by_weight

    readers = {m.name for gid, units in removed.items() if units for m in analysis.groups[gid].members if m.dim == 1}
    linears = _linear_nodes_by_weight(analysis.graph_module)
    biases = {str(node.args[2].target) for name in readers for node in linears.get(name, ())
              if len(node.args) > 2 and isinstance(node.args[2], torch.fx.Node)}
    return readers | biases


@contextlib.contextmanager
def _parked(gm: torch.fx.GraphModule, keep: set[str], reload: Callable[[list[str]], dict[str, torch.Tensor]]) -> Iterator[None]:
    """Drop every parameter outside ``keep`` from the block for the duration, then ``reload`` it.

    The refit's float64 working set (normal equations and a weight-sized right-hand side, next to
    the float32 Gram matrix) is the streamed run's peak; the weights the refit does not touch would
    add to it for nothing.  They are unchanged since they were read, so reading them again from the
    checkpoint (and widening them the same way) restores them bit for bit; nothing reads them in
    between (they are placeholders on the meta device)."""
    # Shapes only, so that each parameter is freed as soon as its placeholder replaces it.
    parked = {name: (p.shape, p.dtype) for name, p in gm.named_parameters() if name not in keep}
    for name, (shape, dtype) in parked.items():
        set_tensor(gm, name, torch.empty(shape, dtype=dtype, device="meta"))
    try:
        yield
    finally:
        for name, tensor in reload(list(parked)).items():
            set_tensor(gm, name, tensor)


def _units_by_kind(analysis: Analysis, removed: dict[int, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for gid, units in removed.items():
        kind = analysis.groups[gid].kind
        if kind in out:
            raise ConfigError(f"block has two {kind} groups; streaming expects one per kind")
        out[kind] = tuple(units)
    return out


class _BlockLayout:
    """The pruned config (from block 0) and the parameter names and shapes every block must then have."""

    def __init__(self, skeleton: _Skeleton, embed_shape: torch.Size, block0: dict[str, torch.Tensor]) -> None:
        from prunec.hf import _llama_config

        prefix = f"{BLOCK_PREFIX}0."
        state = {"model.embed_tokens.weight": torch.empty(embed_shape, device="meta")}
        state.update({prefix + k: v for k, v in block0.items()})
        self.config = _llama_config(skeleton.config, state)
        with torch.device("meta"):
            reference = type(skeleton.model)(self.config)
        self.expected = {k[len(prefix):]: tuple(v.shape) for k, v in reference.state_dict().items() if k.startswith(prefix)}

    def conform(self, index: int, state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Block ``index``'s tensors under the config's names, missing biases zero (as write-back does)."""
        out = {}
        for name, shape in self.expected.items():
            tensor = state.get(name)
            if tensor is None:
                if not name.endswith(".bias"):
                    raise ConfigError(f"pruned block {index} lacks {name}; cannot write it back")
                tensor = torch.zeros(shape)
            if tuple(tensor.shape) != shape:
                raise ConfigError(f"block {index}: {name} has shape {tuple(tensor.shape)}, block 0 gives {shape}; "
                                  "streaming writes uniform widths (use a ratio or --width)")
            out[f"{BLOCK_PREFIX}{index}.{name}"] = tensor.detach().to(dtype)
        extra = sorted(set(state) - set(self.expected))
        if extra:
            raise ConfigError(f"block {index} holds {extra[:3]}, which the pruned config cannot express")
        return out


def stream_prune(checkpoint: Path, output: Path, job: PruneJob, *, force: bool = False, seq_len: int = 16,
                 on_stage: Callable[[str], None] = lambda _: None) -> StreamOutcome:
    """Prune the sharded safetensors checkpoint in ``checkpoint`` block by block into ``output``.

    ``output`` becomes a Hugging Face directory (shards, index, config.json, tokenizer files,
    ``report.json``) that ``AutoModelForCausalLM.from_pretrained`` loads.  Computation runs in
    float32, as :func:`prunec.models.load_model` loads a model for in-memory pruning; tensors are
    written in the checkpoint's dtype.  ``seq_len`` is the example length used without calibration.
    """
    start = time.perf_counter()
    job = validate_stream_job(job)
    _pin_mmap_threshold()
    checkpoint = Path(checkpoint)
    reader = _reader(checkpoint)
    skeleton = _Skeleton(checkpoint)
    store_dtype = reader.dtype("model.embed_tokens.weight")
    compute_dtype = torch.float32
    outcome = StreamOutcome(checkpoint_bytes=sum(p.stat().st_size for p in set(reader.files.values())))
    calibrated = job.calib is not None
    if calibrated:
        tokenizer = _tokenizer(checkpoint)
        seq = calibration_seq_len(job, config=skeleton.config)
        batches = load_calibration(job.calib, tokenizer, CalibrationConfig(job.calib_samples, seq))
        if len({tuple(b[0].shape) for b in batches}) != 1:
            raise ConfigError("calibration batches differ in shape; give samples of one length")
        batches = shard_batches(batches)
    else:
        batches = [(torch.zeros(1, seq_len, dtype=torch.long),)]
    on_stage("embedding the calibration tokens")
    hidden, kwargs = _block_inputs(skeleton, reader, batches, compute_dtype)
    side = _non_block_names(reader, skeleton)
    # Under torch.distributed every process computes (each on its share of the calibration set,
    # the statistics all-reduced); only rank 0 writes.
    main = is_main_process()
    with (atomic_output_dir(Path(output), overwrite=force) if main else contextlib.nullcontext()) as tmp:
        # One shard per non-block tensor (copied unchanged, one at a time) and one per block.
        writer = ShardedWriter(tmp, skeleton.n_blocks + len(side)) if main else _Discard()
        layout: _BlockLayout | None = None
        for name in side:
            writer.write(reader.load([name]))
            outcome.params_before += reader.shape(name).numel()
        for index in range(skeleton.n_blocks):
            on_stage(f"block {index + 1}/{skeleton.n_blocks}: read")
            prefix = f"{BLOCK_PREFIX}{index}."
            names = [n for n in reader.names if n.startswith(prefix)]
            tensors = _read_block(reader, prefix, names, compute_dtype)
            outcome.params_before += sum(t.numel() for t in tensors.values())
            block = skeleton.block(index, tensors)
            del tensors, block
            analysis, removed, outputs = _prune_block(skeleton.model.model.layers[index], hidden, kwargs, job,
                                                      calibrated, release=lambda: skeleton.release(index),
                                                      reload=lambda names, p=prefix: _read_block(reader, p, [p + n for n in names], compute_dtype),
                                                      on_stage=lambda stage: on_stage(f"block {index + 1}/{skeleton.n_blocks}: {stage}"))
            state = {k: v for k, v in analysis.graph_module.state_dict().items()}
            if layout is None:
                layout = _BlockLayout(skeleton, reader.shape("model.embed_tokens.weight"), state)
            pruned = layout.conform(index, state, store_dtype)
            outcome.params_after += sum(t.numel() for t in pruned.values())
            on_stage(f"block {index + 1}/{skeleton.n_blocks}: write")
            writer.write(pruned)
            outcome.removed[index] = _units_by_kind(analysis, removed)
            del analysis, state, pruned
            _release_memory()
            if outputs:
                hidden = [(o if isinstance(o, torch.Tensor) else o[0],) for o in outputs]
        outcome.params_after += sum(reader.shape(n).numel() for n in side)
        writer.finish()
        assert layout is not None
        outcome.config = layout.config.to_dict()
        outcome.seconds = time.perf_counter() - start
        outcome.peak_rss_bytes = _peak_rss()
        if main:
            layout.config.save_pretrained(tmp)
            for file in SIDE_FILES:
                if (checkpoint / file).exists():
                    shutil.copy2(checkpoint / file, tmp / file)
            (tmp / "report.json").write_text(json.dumps(outcome.summary(), indent=2))
    return outcome


def _read_block(reader: ShardedReader, prefix: str, names: list[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Tensors ``names`` (full names) under their names within the block, widened to ``dtype``."""
    stored = reader.load(names)
    return {n[len(prefix):]: stored.pop(n).to(dtype) for n in names}  # one cast copy at a time


class _Discard:
    """The writer of processes other than rank 0: they compute the same blocks and write nothing."""

    def write(self, tensors: Any) -> None:
        pass

    def finish(self) -> None:
        pass


# glibc's mallopt parameter and the threshold it is pinned at (glibc's own initial value).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def _pin_mmap_threshold() -> None:
    """Serve every allocation of 128 KiB or more from its own mapping, returned to the OS on free.

    glibc otherwise raises the threshold to the largest block freed so far (up to 32 MiB), after
    which the refit's and the forward pass's multi-MB temporaries come from the heap and stay
    resident as fragments: measured on a 2-block slice of the 1.54 B benchmark checkpoint, the
    refit run peaked at 0.95 GiB with the dynamic threshold and 0.86 GiB pinned.  Process-wide
    and permanent (glibc has no way back to the dynamic threshold); a no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def _release_memory() -> None:
    """Free the finished block now: traced graphs hold reference cycles, and glibc keeps freed
    heap pages unless asked to return them (otherwise resident memory creeps up block by block)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _reader(checkpoint: Path) -> ShardedReader:
    if not (checkpoint / "config.json").exists():
        raise ModelLoadError(f"{checkpoint} has no config.json; --stream needs a Hugging Face checkpoint directory")
    return ShardedReader(checkpoint)


def _tokenizer(checkpoint: Path) -> Any:
    if not ((checkpoint / "tokenizer.json").exists() or (checkpoint / "tokenizer_config.json").exists()):
        return None
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    except Exception:  # noqa: BLE001 - .npz calibration works without one
        return None


def _non_block_names(reader: ShardedReader, skeleton: _Skeleton) -> list[str]:
    """Embedding, final norm and LM head (not a tied head: from_pretrained ties it again)."""
    tied = bool(getattr(skeleton.config, "tie_word_embeddings", False))
    return [n for n in reader.names if not n.startswith(BLOCK_PREFIX) and not (tied and n == "lm_head.weight")]
