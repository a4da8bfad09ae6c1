"""Model files are data: read weights without running code from the file.

* safetensors files are parsed (``safetensors.torch.load_file``), never executed;
* pickle checkpoints (``.pt``, ``.pth``, ``.bin``) go through ``torch.load(weights_only=True)``,
  which unpickles tensors and plain containers only and refuses any other global;
* loaders that call ``torch.load`` internally (``torch.export.load`` of a ``.pt2`` falls back to a
  full unpickle; Hugging Face ``.bin`` weights) run under :func:`weights_only_loads`, which forces
  every ``torch.load`` in the block to ``weights_only=True``.

Code from a model file runs only when the user says so (``--trust-remote-code``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from pathlib import Path
from typing import Iterator

import torch

from prunec.errors import ModelLoadError, UnsafeModelError

_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NO = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")


@contextlib.contextmanager
def weights_only_loads(enabled: bool = True) -> Iterator[None]:
    """Within the block, every ``torch.load`` behaves as ``weights_only=True`` (torch's own switch)."""
    if not enabled:
        yield
        return
    saved = {k: os.environ.get(k) for k in (_FORCE, _FORCE_NO)}
    os.environ[_FORCE] = "1"
    os.environ.pop(_FORCE_NO, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_unsafe_pickle_error(exc: BaseException) -> bool:
    """Did ``torch.load(weights_only=True)`` refuse a global that a full unpickle would have run?"""
    text = str(exc)
    return isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text


def unsafe_error(path: Path, exc: BaseException) -> UnsafeModelError:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" (it references {found.group(1).strip()})" if found else ""
    return UnsafeModelError(
        f"{path} is a pickle that would run code when loaded{what}; prunec loads pickles only as weights "
        "(torch.load weights_only=True). Convert it to safetensors, or if you trust the file pass "
        "--trust-remote-code")


def read_state_dict(path: Path, *, trust_remote_code: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a single checkpoint file (``.safetensors`` or a pickle), without running its code."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:160]}); "
                                 "re-download or re-save it") from None
    if path.suffix not in PICKLE_SUFFIXES:
        raise ModelLoadError(f"unsupported checkpoint {path}; use .safetensors, .pt, .pth or .bin")
    try:
        with weights_only_loads(not trust_remote_code):
            obj = torch.load(str(path), map_location="cpu", weights_only=not trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - classified below
        if not trust_remote_code and is_unsafe_pickle_error(exc):
            raise unsafe_error(path, exc) from None
        raise ModelLoadError(f"cannot read checkpoint {path}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''}; re-save it with torch.save(state_dict)") from None
    if isinstance(obj, torch.nn.Module):
        raise ModelLoadError(f"{path} holds a pickled nn.Module, which has no example inputs; load it in your own "
                             "factory and pass 'package.module:factory'")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (name -> tensor); save model.state_dict()")
    return obj
