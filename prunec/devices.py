"""Choosing a device and moving models (traced graphs included) between devices.

``torch.export`` bakes the device it traced on into the graph: ``arange``/``full``/``_to_copy``
and ``_assert_tensor_metadata`` nodes carry ``device=cpu`` keyword arguments, ``aten.to.device``
a positional one.  Moving such a ``GraphModule``'s parameters with ``.to("cuda")`` alone leaves
those nodes making CPU tensors, so :func:`move_module` rewrites those arguments too.
"""

from __future__ import annotations

import torch
from torch.fx.node import map_aggregate

from prunec.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA GPU when one is present, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` as named (a GPU that is absent is a :class:`ConfigError`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{name}' is not supported; use auto, cpu or cuda[:N]")
    return device


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def move_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``module``'s parameters and buffers to ``device`` in place, and for a ``GraphModule`` also
    the devices its nodes create tensors on; returns the module."""
    module.to(device)
    # Higher-order ops (autocast / no-grad regions) keep their bodies in nested GraphModules.
    for graph_module in module.modules():
        if not isinstance(graph_module, torch.fx.GraphModule):
            continue
        # Tensor constants (``_tensor_constant0``) are plain attributes, which ``.to`` skips.
        for name, value in list(vars(graph_module).items()):
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                setattr(graph_module, name, value.to(device))
        changed = False
        for node in graph_module.graph.nodes:
            # Devices appear as keyword (``arange(..., device=cpu)``) and positional arguments
            # (``aten.to.device(x, cpu, float32)``).
            args = map_aggregate(node.args, lambda a: device if isinstance(a, torch.device) else a)
            kwargs = map_aggregate(node.kwargs, lambda a: device if isinstance(a, torch.device) else a)
            if args != node.args or kwargs != node.kwargs:
                node.args, node.kwargs = args, kwargs
                changed = True
        if changed:
            graph_module.recompile()
    return module


def move_batch(batch: tuple, device: torch.device) -> tuple:
    """A calibration batch (a tuple of tensors and other values) with its tensors on ``device``."""
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in batch)
