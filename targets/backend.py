"""The lowering-backend interface and its registry (``onnx``, ``tvm``, ...).

A backend turns an exported (pruned) program into artefact files for a :class:`TargetPreset`,
and gives back a runner that executes those files (natively for the host, under the preset's
emulator for a foreign architecture). Backends register by name with :func:`register_backend`;
``prunec compile --backend NAME`` looks them up with :func:`get_backend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from prunec.errors import ConfigError
from prunec.targets.preset import TargetPreset


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output of a compiled artefact."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32", "int64"


# ``--quantize`` modes that quantise activations too (int8, ``onnxruntime.quantization``); the
# weight-only modes are the registry ``prunec.targets.onnx_weights.WEIGHT_ONLY_MODES``.
ACTIVATION_MODES = ("dynamic", "static")


@dataclass(frozen=True)
class CompileOptions:
    """Backend options a user picks on ``prunec compile``."""

    quantize: str = "none"          # none, dynamic, static (int8 with calibration data), int8-weights, int4-weights
    tuning: str = "default"         # backend specific (tvm: none, dlight, metaschedule)
    tuning_trials: int = 0
    threads: int = 0                # 0: the runtime's default
    calibration: tuple[tuple[np.ndarray, ...], ...] = ()  # input batches for static quantisation


@dataclass
class Artifact:
    """What a backend wrote: files (relative to the output directory) and the I/O signature."""

    files: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    details: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # for the report: what the user may want to change


Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


class Backend(Protocol):
    name: str

    def missing(self, preset: TargetPreset) -> str | None:
        """Why this backend cannot compile or run for ``preset`` here (None when it can)."""

    def compile(self, program: torch.export.ExportedProgram, example_inputs: Sequence[np.ndarray],
                preset: TargetPreset, out_dir: Path, options: CompileOptions) -> Artifact:
        """Lower ``program`` for ``preset`` into files under ``out_dir``."""

    def runner(self, out_dir: Path, manifest: dict[str, Any], preset: TargetPreset) -> Runner:
        """A callable running the artefact in ``out_dir`` on numpy inputs (positional order).

        ``manifest`` is the compiled directory's ``manifest.json``; its ``threads`` entry (0: the
        runtime's default) is how ``prunec bench --threads`` asks for a thread count, and its
        ``backend_details`` is what :meth:`compile` put in :attr:`Artifact.details`.
        """


def io_names(program: torch.export.ExportedProgram) -> tuple[list[str], list[str]]:
    """Names for a program's user inputs (its forward's argument names) and flattened outputs.

    Outputs are named after their path in the output structure (``logits`` for a Hugging Face
    ``ModelOutput``, ``output_0``, ``output_1``... for plain tensors and tuples), so that every
    backend gives ``prunec run`` the same names.
    """
    import torch.utils._pytree as pytree

    inputs = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    spec = program.call_spec.out_spec
    if spec is None:
        return inputs, [f"output_{i}" for i in range(len(program.graph_signature.user_outputs))]
    paths = [path for path, _ in pytree.tree_flatten_with_path(pytree.tree_unflatten(list(range(spec.num_leaves)), spec))[0]]
    outputs = []
    for i, path in enumerate(paths):
        keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", "")))) for k in path]
        named = "_".join(k for k in keys if k and not k.isdigit())
        outputs.append(named if named and named.isidentifier() else f"output_{i}")
    if len(set(outputs)) != len(outputs):
        outputs = [f"output_{i}" for i in range(len(outputs))]
    return inputs, outputs


_BACKENDS: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str) -> Callable[[Callable[[], Backend]], Callable[[], Backend]]:
    """Register a backend factory (usually the class) under ``name``."""

    def deco(factory: Callable[[], Backend]) -> Callable[[], Backend]:
        _BACKENDS[name] = factory
        return factory

    return deco


def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (importing the built-in backends first)."""
    _import_builtin_backends()
    if name not in _BACKENDS:
        raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(sorted(_BACKENDS)) or 'none'}")
    return _BACKENDS[name]()


def backend_names() -> list[str]:
    _import_builtin_backends()
    return sorted(_BACKENDS)


def _import_builtin_backends() -> None:
    # Imported lazily so that `import prunec` never needs onnx or tvm installed.
    import importlib

    for module in ("prunec.targets.onnx_backend", "prunec.targets.tvm_backend", "prunec.targets.gguf_backend"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("prunec.targets."):
                continue  # not written yet
            raise
