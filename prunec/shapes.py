"""Shape re-propagation: recompute every node's ``meta["val"]`` with fake tensors."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import optimization_hint
from torch.fx.passes.fake_tensor_prop import FakeTensorProp


def is_symbolic(size: Any) -> bool:
    """Is this dimension size symbolic (a dynamic batch/length/resolution traced by ``torch.export``)?"""
    return isinstance(size, torch.SymInt) and size.node.maybe_as_int() is None


def size_hint(size: Any) -> int:
    """A dimension's size in the traced example, without adding a guard.

    ``int()`` of a symbolic size would specialise it in the graph's shape environment (every
    later shape propagation would then see the example's number); the hint does not.
    """
    if isinstance(size, torch.SymInt):
        known = size.node.maybe_as_int()
        if known is not None:
            return int(known)
        return int(size.node.hint) if size.node.hint is not None else optimization_hint(size)
    return int(size)


def hint_shape(shape: Any) -> tuple[int, ...]:
    """The example's sizes of a (possibly symbolic) shape, see :func:`size_hint`."""
    return tuple(size_hint(s) for s in shape)


def symbolic_mode(gm: fx.GraphModule) -> FakeTensorMode | None:
    """The fake mode of the placeholders when some input has symbolic sizes (a dynamic-shape trace)."""
    vals = [n.meta.get("val") for n in gm.graph.find_nodes(op="placeholder")]
    if not any(isinstance(v, torch.Tensor) and any(is_symbolic(s) for s in v.shape) for v in vals):
        return None
    from torch._guards import detect_fake_mode

    return detect_fake_mode([v for v in vals if isinstance(v, torch.Tensor)])


def fake_inputs(gm: fx.GraphModule, mode: FakeTensorMode) -> list[Any]:
    """Fake tensors shaped like the placeholders' ``meta["val"]`` (non-tensor inputs as they are).

    Symbolic placeholders are passed as they are (``mode`` must then be their own mode, see
    :func:`symbolic_mode`): re-propagation keeps batch and length symbolic.
    """
    out = []
    for node in gm.graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and any(is_symbolic(s) for s in val.shape):
            out.append(val)
        elif isinstance(val, torch.Tensor):
            out.append(mode.from_tensor(torch.zeros(hint_shape(val.shape), dtype=val.dtype)))
        else:
            out.append(val)
    return out


def propagation_mode(gm: fx.GraphModule) -> FakeTensorMode:
    """The fake mode to re-propagate ``gm`` in: its inputs' own mode if symbolic, else a fresh one."""
    return symbolic_mode(gm) or FakeTensorMode(allow_non_fake_inputs=True)


def shape_of(val: Any) -> tuple[int, ...] | None:
    """The example's shape of a tensor-valued ``meta["val"]`` (None for non-tensors)."""
    return hint_shape(val.shape) if isinstance(val, torch.Tensor) else None


def repropagate(gm: fx.GraphModule) -> dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]]:
    """Re-run shape propagation from the placeholders' metadata; return the nodes whose shape changed.

    The result maps a node name to ``(shape recorded before, shape propagated now)`` (None:
    no tensor metadata); an empty dict means the recorded metadata was already consistent.
    """
    recorded = {n.name: shape_of(n.meta.get("val")) for n in gm.graph.nodes}
    mode = propagation_mode(gm)
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
