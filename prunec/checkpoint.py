"""Sharded safetensors checkpoints read tensor by tensor and written shard by shard.

A checkpoint directory holds ``model.safetensors`` or ``model.safetensors.index.json`` plus the
shards it names.  :class:`ShardedReader` opens a shard only for the tensors asked for and closes
it again (the memory map goes with it), so reading one decoder block keeps one block resident.
:class:`ShardedWriter` writes each group of tensors it is given as its own shard and the index
that ``from_pretrained`` reads at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import torch

from prunec.errors import ModelLoadError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


class ShardedReader:
    """Tensor name -> shard file of a safetensors checkpoint; loads only the tensors asked for."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        index = self.directory / INDEX
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise ModelLoadError(f"{index} is not a safetensors index ({exc}); re-save the checkpoint") from None
            self.files = {name: self.directory / file for name, file in weight_map.items()}
        elif (self.directory / SINGLE).exists():
            from safetensors import safe_open

            with safe_open(str(self.directory / SINGLE), framework="pt") as f:
                self.files = {name: self.directory / SINGLE for name in f.keys()}
        else:
            raise ModelLoadError(f"{self.directory} has no {SINGLE} or {INDEX}; streaming needs safetensors weights "
                                 "(convert with save_pretrained(..., safe_serialization=True))")
        missing = sorted({str(p.name) for p in self.files.values() if not p.exists()})
        if missing:
            raise ModelLoadError(f"{self.directory} lacks shard(s) {missing[:3]} named by its index")

    @property
    def names(self) -> list[str]:
        return list(self.files)

    def shape(self, name: str) -> torch.Size:
        """A tensor's shape, read from the shard header (no data loaded)."""
        from safetensors import safe_open

        with safe_open(str(self.files[name]), framework="pt") as f:
            return torch.Size(f.get_slice(name).get_shape())

    def rows(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        """Rows ``indices`` of a 2-D tensor (an embedding lookup), reading only those rows."""
        from safetensors import safe_open

        unique, inverse = torch.unique(indices.reshape(-1), return_inverse=True)
        with safe_open(str(self.files[name]), framework="pt") as f:
            view = f.get_slice(name)
            picked = torch.cat([view[int(i) : int(i) + 1] for i in unique])
        return picked[inverse].reshape(*indices.shape, picked.shape[-1])

    def dtype(self, name: str) -> torch.dtype:
        """A tensor's dtype, read from the shard header (no data loaded)."""
        from safetensors import safe_open

        with safe_open(str(self.files[name]), framework="pt") as f:
            code = f.get_slice(name).get_dtype()
        if code not in SAFETENSORS_DTYPES:
            raise ModelLoadError(f"tensor {name} has dtype {code}, which prunec does not read")
        return SAFETENSORS_DTYPES[code]

    def load(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The named tensors (safetensors copies them out of the shard, whose memory map is closed on return)."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for name in names:
            if name not in self.files:
                raise ModelLoadError(f"tensor {name} is not in the checkpoint {self.directory}")
            by_file.setdefault(self.files[name], []).append(name)
        out: dict[str, torch.Tensor] = {}
        for file, wanted in by_file.items():
            with safe_open(str(file), framework="pt") as f:
                for name in wanted:
                    out[name] = f.get_tensor(name)
        return out


class ShardedWriter:
    """Writes ``model-XXXXX-of-YYYYY.safetensors`` shards and their index, one shard per ``write`` call."""

    def __init__(self, directory: Path, n_shards: int) -> None:
        self.directory = Path(directory)
        self.n_shards = n_shards
        self.written = 0
        self.weight_map: dict[str, str] = {}
        self.total_bytes = 0

    def write(self, tensors: Mapping[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        if not tensors:
            return
        self.written += 1
        if self.written > self.n_shards:
            raise ValueError(f"more shards written than the {self.n_shards} announced")
        file = f"model-{self.written:05d}-of-{self.n_shards:05d}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(self.directory / file), metadata={"format": "pt"})
        for name, t in tensors.items():
            self.weight_map[name] = file
            self.total_bytes += t.numel() * t.element_size()

    def finish(self) -> None:
        """Rename the shards to the count actually written and write the index."""
        if self.written != self.n_shards:
            renames = {f"model-{i:05d}-of-{self.n_shards:05d}.safetensors": f"model-{i:05d}-of-{self.written:05d}.safetensors"
                       for i in range(1, self.written + 1)}
            for old, new in renames.items():
                (self.directory / old).rename(self.directory / new)
            self.weight_map = {k: renames[v] for k, v in self.weight_map.items()}
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.directory / INDEX).write_text(json.dumps(index, indent=2))
