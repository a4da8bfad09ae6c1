"""Calibration data: text (plain or JSONL) tokenised with the model's tokenizer, or tensors from ``.npz``.

Returns a list of example-argument tuples (one per sample), ready to be fed to the
traced graph.  Never calibrate on the data you evaluate on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from prunec.errors import ConfigError


@dataclass(frozen=True)
class CalibrationConfig:
    """How many samples of how many tokens to take from a calibration file."""

    n_samples: int = 32
    seq_len: int = 256
    batch_size: int = 1


def jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line of a JSONL file; bad JSON is a ConfigError."""
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{i} is not valid JSON ({exc.msg}); JSONL needs one object per line") from None


def _read_text(path: Path) -> str:
    if path.suffix == ".jsonl":
        texts = []
        for i, record in jsonl_records(path):
            text = record.get("text") if isinstance(record, dict) else record if isinstance(record, str) else None
            if text is None:
                raise ConfigError(f"{path}:{i} has no 'text' field; JSONL lines must look like {{\"text\": ...}}")
            texts.append(text)
        return "\n\n".join(texts)
    return path.read_text(encoding="utf-8")


def token_windows(ids: torch.Tensor, seq_len: int, n: int | None) -> list[torch.Tensor]:
    """Non-overlapping windows of ``seq_len`` tokens from a 1-D id stream (the first ``n``)."""
    count = ids.numel() // seq_len
    if n is not None:
        count = min(count, n)
    return [ids[i * seq_len : (i + 1) * seq_len] for i in range(count)]


def load_text_calibration(path: Path, tokenizer: Any, config: CalibrationConfig) -> list[tuple]:
    if tokenizer is None:
        raise ConfigError(f"text calibration data {path} needs a tokenizer; this model has none (use an .npz file)")
    text = _read_text(path)
    # Tokenise only as much as the samples need (with a margin), not the whole file.
    need_chars = config.n_samples * config.seq_len * 8
    ids = tokenizer(text[:need_chars], return_tensors="pt").input_ids[0]
    windows = token_windows(ids, config.seq_len, config.n_samples)
    if len(windows) < 1:
        raise ConfigError(f"calibration data {path} has {ids.numel()} tokens, fewer than one sample of "
                          f"{config.seq_len}; give a longer file or a smaller --calib-seq-len")
    return [(torch.stack(windows[i : i + config.batch_size]),) for i in range(0, len(windows), config.batch_size)]


def load_npz_calibration(path: Path, config: CalibrationConfig) -> list[tuple]:
    try:
        data = np.load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise ConfigError(f"cannot read calibration file {path}: {exc}") from None
    keys = sorted(data.files, key=lambda k: (not k.startswith("arr_"), k))
    if not keys:
        raise ConfigError(f"calibration file {path} holds no arrays")
    arrays = [torch.from_numpy(data[k]) for k in keys]
    n = min(a.shape[0] for a in arrays)
    if n == 0:
        raise ConfigError(f"calibration file {path} holds no samples (first dimension is 0)")
    n = min(n, config.n_samples)
    return [tuple(a[i : i + config.batch_size] for a in arrays) for i in range(0, n, config.batch_size)]


def check_data_file(path: str | Path, what: str) -> Path:
    """A data file that exists, is a readable regular file and is not empty; checked before any model
    loads, so a typo in a path fails in a second instead of after minutes of loading."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} not found; check the path")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file; give a text, JSONL or .npz file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{what} {path} is empty; give a file with data")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror}); check its permissions") from None
    return path


def load_calibration(path: str | Path, tokenizer: Any = None, config: CalibrationConfig = CalibrationConfig()) -> list[tuple]:
    """Calibration batches from a text/JSONL file (tokenised) or an ``.npz`` of input arrays."""
    path = check_data_file(path, "calibration file")
    if path.suffix == ".npz":
        return load_npz_calibration(path, config)
    return load_text_calibration(path, tokenizer, config)
