"""The ``gguf`` backend: a pruned LLaMA-family model as a GGUF file that llama.cpp runs.

Unlike ``onnx`` and ``tvm`` it does not lower the exported graph: GGUF holds weights and
hyper-parameters, and llama.cpp brings its own decoder (with a KV cache). ``prunec compile
--backend gguf`` therefore writes the file from the pruned program's tensors
(:mod:`prunec.compile_gguf`, :mod:`prunec.targets.gguf_writer`) and verifies it in llama.cpp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from prunec.errors import ConfigError
from prunec.targets import llamacpp_runtime
from prunec.targets.backend import Artifact, CompileOptions, Runner, register_backend
from prunec.targets.preset import TargetPreset


@register_backend("gguf")
class GGUFBackend:
    name = "gguf"
    artifact_kind = "gguf"   # what prunec.compile writes for this backend (a text decoder, not a graph)
    width_multiple = 32      # Q8_0/Q4_0 blocks and llama.cpp's sgemm path want rows of multiples of 32

    def missing(self, preset: TargetPreset) -> str | None:
        return llamacpp_runtime.missing()

    def compile(self, program: torch.export.ExportedProgram, example_inputs: Sequence[np.ndarray],
                preset: TargetPreset, out_dir: Path, options: CompileOptions) -> Artifact:
        raise ConfigError("GGUF is written from a model's tensors, not from a graph: use prunec compile --backend gguf")

    def runner(self, out_dir: Path, manifest: dict[str, Any], preset: TargetPreset) -> Runner:
        raise ConfigError(f"{out_dir} holds a GGUF text decoder: use prunec generate or prunec bench")
