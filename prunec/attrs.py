"""Reading and replacing tensors of a module by their dotted attribute path (``"model.layers.0.mlp.up.weight"``)."""

from __future__ import annotations

from typing import Any

import torch


def get_path(root: torch.nn.Module, path: str) -> Any:
    """The object at ``path`` below ``root`` (raises ``AttributeError`` if any part is missing)."""
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_tensor(root: torch.nn.Module, path: str, value: torch.Tensor) -> None:
    """Replace the tensor at ``path``, keeping its kind: parameter, buffer or plain attribute."""
    *parents, attr = path.split(".")
    owner = get_path(root, ".".join(parents)) if parents else root
    old = getattr(owner, attr)
    if isinstance(old, torch.nn.Parameter):
        setattr(owner, attr, torch.nn.Parameter(value, requires_grad=old.requires_grad))
    elif attr in getattr(owner, "_buffers", {}):
        owner._buffers[attr] = value
    else:
        setattr(owner, attr, value)
