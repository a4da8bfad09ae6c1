"""Lower a pruned causal LM to an ONNX Runtime GenAI folder with the library's own model builder.

The fixed-length graph of :mod:`prunec.targets.onnx_backend` cannot generate text: it has no KV
cache and no tokenizer. For a causal LM whose pruned widths a Hugging Face config can express
(uniform across layers, :func:`prunec.hf.to_pretrained`), this module writes that stock HF
directory (weights, config, tokenizer) to scratch space and hands it to
``onnxruntime_genai.models.builder`` (``create_model``), which writes ``model.onnx`` with
past/present KV inputs and outputs, ``genai_config.json`` and the tokenizer files that
``onnxruntime_genai.Model`` / ``Tokenizer`` load. prunec does not re-implement any of it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from prunec.errors import ConfigError, ToolchainError

GENAI_CONFIG = "genai_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# --quantize mode -> the builder's precision. Weight-only modes map onto the builder's own
# MatMulNBits quantisation; int8 activation modes have no builder counterpart.
BUILDER_PRECISION = {"none": "fp32", "int8-weights": "int8", "int4-weights": "int4"}
# The Hugging Face classes the builder converts (builder.create_model) that prunec also writes back
# (prunec.hf.LLAMA_FAMILY). Keyed by class name, as the builder dispatches on config.architectures.
BUILDER_ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                                   "Phi3ForCausalLM", "GemmaForCausalLM"})


@dataclass(frozen=True)
class GenaiFolder:
    """What the builder wrote: files (relative to the folder) and what the manifest records."""

    files: tuple[str, ...]
    precision: str
    max_context: int
    layer_widths: tuple[dict[str, int], ...]
    chat_template: bool
    builder_version: str


def builder_available() -> str | None:
    """Why the ONNX Runtime GenAI builder cannot run here (None when it can)."""
    for module in ("onnxruntime_genai", "onnx_ir", "transformers"):
        try:
            __import__(module)
        except ImportError:
            return f"the decoder artefact needs {module}: pip install 'prunec[onnx,hf]'"
    return None


def convertible(model: torch.nn.Module) -> bool:
    """Whether the builder converts ``model``'s class (a causal LM of a family prunec writes back)."""
    return type(model).__name__ in BUILDER_ARCHITECTURES


def builder_precision(quantize: str) -> str:
    """The builder precision for a ``--quantize`` mode (raises :class:`ConfigError` for the others)."""
    if quantize not in BUILDER_PRECISION:
        raise ConfigError(f"--quantize {quantize} has no onnxruntime-genai counterpart; choose one of "
                          f"{', '.join(BUILDER_PRECISION)} for the decoder artefact, or --artifact graph for int8 "
                          f"activations in a fixed-length graph")
    return BUILDER_PRECISION[quantize]


def layer_widths(model: torch.nn.Module) -> tuple[dict[str, int], ...]:
    """Per-layer widths of a rebuilt HF model, read from each layer's projections (the config's values
    where a family fuses them, e.g. Phi-3's ``qkv_proj``)."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    widths = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        k_proj = getattr(attn, "k_proj", None)
        widths.append({"hidden": c.hidden_size, "heads": attn.o_proj.in_features // head_dim,
                       "kv_heads": k_proj.out_features // head_dim if k_proj is not None else c.num_key_value_heads,
                       "head_dim": head_dim, "ffn": mlp.down_proj.in_features})
    return tuple(widths)


def build_genai(model: torch.nn.Module, tokenizer: Any, out_dir: Path, quantize: str = "none") -> GenaiFolder:
    """Write ``model`` (a stock HF causal LM) and ``tokenizer`` as an ONNX Runtime GenAI folder.

    Raises :class:`ToolchainError` when the builder fails or leaves out a file generation needs.
    """
    reason = builder_available()
    if reason:
        raise ToolchainError(reason)
    import onnxruntime_genai
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    precision = builder_precision(quantize)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prunec-genai-") as scratch:
        hf_dir, cache = Path(scratch) / "hf", Path(scratch) / "cache"
        try:
            with _quiet():
                model.save_pretrained(hf_dir)
                tokenizer.save_pretrained(hf_dir)
                options = parse_extra_options(None, str(hf_dir), str(out_dir), precision, "cpu", str(cache), [])
                create_model(None, str(hf_dir), str(out_dir), precision, "cpu", str(cache), **options)
        except Exception as exc:  # noqa: BLE001 - any builder failure becomes one line naming the cause
            raise ToolchainError(f"onnxruntime_genai's model builder failed: {type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}; "
                                 f"compile with --artifact graph for a fixed-length graph") from exc
    chat = _carry_chat_template(tokenizer, out_dir)
    missing = [n for n in ("model.onnx", GENAI_CONFIG, *TOKENIZER_FILES) if not (out_dir / n).is_file()]
    if missing:
        raise ToolchainError(f"the model builder did not write {', '.join(missing)}; check the onnxruntime-genai "
                             f"installation (pip install 'prunec[onnx]')")
    genai = json.loads((out_dir / GENAI_CONFIG).read_text())
    files = tuple(sorted(p.name for p in out_dir.iterdir() if p.is_file()))
    return GenaiFolder(files=files, precision=precision, max_context=int(genai["model"]["context_length"]),
                       layer_widths=layer_widths(model), chat_template=chat,
                       builder_version=onnxruntime_genai.__version__)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Saving and the builder print progress (tqdm bars) for every tensor, and its int4/int8 quantiser
    logs every node at INFO through its own handler: not the user's business."""
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _carry_chat_template(tokenizer: Any, out_dir: Path) -> bool:
    """Put the tokenizer's chat template into ``tokenizer_config.json`` too.

    transformers 5 saves it only as ``chat_template.jinja``; ORT GenAI reads that, but older
    readers (and transformers 4) look in ``tokenizer_config.json``. Returns whether there is one.
    """
    template = getattr(tokenizer, "chat_template", None)
    config_path = out_dir / "tokenizer_config.json"
    if not isinstance(template, str) or not template or not config_path.is_file():
        return False
    config = json.loads(config_path.read_text())
    if "chat_template" not in config:
        config["chat_template"] = template
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return True
