"""Shape re-propagation: recompute every node's ``meta["val"]`` with fake tensors."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp


def fake_inputs(gm: fx.GraphModule, mode: FakeTensorMode) -> list[Any]:
    """Fake tensors shaped like the placeholders' ``meta["val"]`` (non-tensor inputs as they are)."""
    out = []
    for node in gm.graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            out.append(mode.from_tensor(torch.zeros(val.shape, dtype=val.dtype)))
        else:
            out.append(val)
    return out


def shape_of(val: Any) -> tuple[int, ...] | None:
    """The static shape of a tensor-valued ``meta["val"]`` (None for non-tensors)."""
    return tuple(int(s) for s in val.shape) if isinstance(val, torch.Tensor) else None


def repropagate(gm: fx.GraphModule) -> dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]]:
    """Re-run shape propagation from the placeholders' metadata; return the nodes whose shape changed.

    The result maps a node name to ``(shape recorded before, shape propagated now)`` (None:
    no tensor metadata); an empty dict means the recorded metadata was already consistent.
    """
    recorded = {n.name: shape_of(n.meta.get("val")) for n in gm.graph.nodes}
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    FakeTensorProp(gm, mode).propagate(*fake_inputs(gm, mode))
    changed = {}
    for node in gm.graph.nodes:
        now = shape_of(node.meta.get("val"))
        if now != recorded.get(node.name):
            changed[node.name] = (recorded[node.name], now)
    return changed


def fake_value(gm: fx.GraphModule, tensor: torch.Tensor) -> torch.Tensor:
    """A fake tensor like ``tensor`` in the fake mode the graph's metadata already uses."""
    from torch._guards import detect_fake_mode

    mode = detect_fake_mode([n.meta["val"] for n in gm.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)])
    mode = mode or FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        return torch.empty_strided(tuple(tensor.shape), tuple(tensor.stride()), dtype=tensor.dtype)


def add_tensor_attr(gm: fx.GraphModule, path: str, value: torch.Tensor, *, before: fx.Node) -> fx.Node:
    """Register ``value`` as a parameter at the unused dotted ``path`` and read it with a new ``get_attr`` node."""
    *parents, attr = path.split(".")
    owner: torch.nn.Module = gm
    for part in parents:
        owner = getattr(owner, part)
    owner.register_parameter(attr, torch.nn.Parameter(value, requires_grad=False))
    with gm.graph.inserting_before(before):
        node = gm.graph.get_attr(path)
    node.meta["val"] = fake_value(gm, value)
    return node


def free_attr_path(gm: fx.GraphModule, wanted: str) -> str:
    """``wanted`` if no attribute lives there yet, else ``wanted_1``, ``wanted_2``, ..."""
    def taken(path: str) -> bool:
        obj: Any = gm
        for part in path.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    path, i = wanted, 0
    while taken(path):
        i += 1
        path = f"{wanted}_{i}"
    return path
