"""Trace: a PyTorch model -> an ATen-level ``torch.fx.GraphModule``.

``torch.export.export(strict=False)`` first (parameters as ``get_attr`` nodes once
unlifted, ``meta["val"]`` on every node); ``torch.fx.symbolic_trace`` followed by
export of the traced module as a fallback.  Works for models on the ``meta``
device: only shapes are needed.

With ``dynamic=True`` every input dimension is traced as ``Dim.AUTO``: export keeps a dimension
symbolic unless the model pins it (a channel count read by a weight), so the batch and
sequence/spatial axes stay dynamic and the pruned module accepts other batch sizes,
lengths and resolutions.  Export specialises size-1 example dims, so a batch of one is
traced as a batch of two (the example repeated).  A model whose dynamic trace fails is
traced statically; ``gm.meta["prunec_dynamic_dims"]`` and ``gm.meta["prunec_static_reason"]``
say which happened.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
from typing import Any, Iterator

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.export import Dim

from prunec.errors import TraceError
from prunec.module import make_mode_switching
from prunec.shapes import is_symbolic


@contextlib.contextmanager
def _no_kv_cache(model: torch.nn.Module) -> Iterator[None]:
    """Hugging Face models read ``config.use_cache``; tracing wants no KV cache in the graph."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "use_cache"):
        yield
        return
    old = config.use_cache
    config.use_cache = False
    try:
        yield
    finally:
        config.use_cache = old


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export logs (and prints to stderr) whole graphs when it fails; the TraceError below says
    what matters in one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _as_tuple(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)


def _describe(exc: BaseException) -> str:
    """One line about a tracing failure: its message and the user code (or op) that raised it."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # torch.export prints the generated graph first; the message proper follows the last graph line.
    message = next((l for l in lines if not l.startswith(("def ", "#")) and ": \"" not in l and "=" not in l[:40]),
                   lines[0] if lines else type(exc).__name__)
    where = ""
    call = re.search(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in (\w+)\s*\n\s*(.+)', text)
    if call:
        where = f" at {call.group(1)}:{call.group(2)} in {call.group(3)}: {call.group(4).strip()}"
    else:
        op = re.search(r"(aten\.[\w.]+)", text)
        if op and op.group(1) not in message:
            where = f" (in {op.group(1)})"
    return f"{type(exc).__name__}: {message[:240]}{where}"


def _set_training(model: torch.nn.Module, mode: bool) -> None:
    # Modules unlifted from an exported program refuse train()/eval(); they are already fixed.
    try:
        model.train(mode)
    except NotImplementedError:
        pass


def _widen_batch(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
    """The example with a batch of two (each tensor repeated along dim 0) when every tensor input has
    a batch of one; None otherwise.  Export would specialise a size-1 batch to a constant."""
    leaves = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    if not leaves or any(t.dim() == 0 or t.shape[0] != 1 for t in leaves):
        return None
    return pytree.tree_map_only(torch.Tensor, lambda t: torch.cat([t, t]), (args, kwargs))


def dynamic_spec(model: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``dynamic_shapes`` for ``torch.export``: ``Dim.AUTO`` on every dim of every tensor input,
    keyed by the forward's parameter names (export pins the dims the model needs static)."""
    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    leaf = lambda t: {d: Dim.AUTO for d in range(t.dim())} if isinstance(t, torch.Tensor) else None  # noqa: E731
    return {name: pytree.tree_map(leaf, value) for name, value in bound.arguments.items()}


def dynamic_dims(gm: fx.GraphModule) -> dict[str, tuple[int, ...]]:
    """Which dims of which inputs are symbolic in ``gm`` (placeholder name -> dims)."""
    out = {}
    for node in gm.graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            dims = tuple(d for d, s in enumerate(val.shape) if is_symbolic(s))
            if dims:
                out[node.name] = dims
    return out


def _export(model: torch.nn.Module, args: tuple, kwargs: dict[str, Any], dynamic: bool) -> tuple[Any, str]:
    """Export ``model``; with ``dynamic``, batch and lengths symbolic where the model allows.

    Returns the program and, when a dynamic trace was asked for and not obtained, why."""
    if not dynamic:
        return torch.export.export(model, args, kwargs, strict=False), "static shapes asked for"
    wide = _widen_batch(args, kwargs)
    attempts = ([wide] if wide is not None else []) + [(args, kwargs)]
    reason = ""
    for a, k in attempts:
        try:
            ep = torch.export.export(model, a, k, dynamic_shapes=dynamic_spec(model, a, k), strict=False)
        except Exception as exc:  # noqa: BLE001 - a failed dynamic trace falls back to a static one
            reason = f"dynamic trace failed ({_describe(exc)})"
            break
        if a is args or any(0 in dims for dims in dynamic_dims(ep.module()).values()):
            return ep, ""
        reason = "the batch dim specialised"  # the widened example pinned batch=2: retrace as given
    ep = torch.export.export(model, args, kwargs, strict=False)
    return ep, reason


def trace(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
    *,
    dynamic: bool = False,
) -> fx.GraphModule:
    """Trace ``model`` on ``example_inputs`` into an ATen-level FX graph.

    Returns the unlifted ``GraphModule`` of ``torch.export`` (callable with the same
    inputs as the model); ``gm.meta["prunec_tracer"]`` says which tracer succeeded.
    With ``dynamic`` (the default of :func:`prunec.prune` and :func:`prunec.analyze`; the IR
    tools trace statically) batch and sequence/spatial dims stay symbolic where the model allows:
    ``gm.meta["prunec_dynamic_dims"]`` maps input names to their symbolic dims, ``gm.meta["prunec_static_reason"]`` says why a trace is static ("" if dynamic).
    Without it every dim is pinned to the example's size.  The model is traced in eval mode.
    Raises :class:`~prunec.errors.TraceError` with the failing op or module named.
    """
    args = _as_tuple(example_inputs)
    kwargs = dict(example_kwargs or {})
    was_training = model.training
    _set_training(model, False)
    try:
        with _no_kv_cache(model), _quiet_torch_logs():
            try:
                ep, static_reason = _export(model, args, kwargs, dynamic)
                tracer = "torch.export"
            except Exception as export_exc:  # noqa: BLE001 - every tracer failure is reported below
                try:
                    symbolic = fx.symbolic_trace(model)
                    ep, static_reason = _export(symbolic, args, kwargs, dynamic)
                    tracer = "torch.fx.symbolic_trace+torch.export"
                except Exception:  # noqa: BLE001
                    raise TraceError(
                        f"cannot trace {type(model).__name__}: {_describe(export_exc)}; "
                        "make the failing code traceable (no data-dependent Python control flow) "
                        "or pass example inputs that match the model"
                    ) from export_exc
    finally:
        _set_training(model, was_training)
    gm = make_mode_switching(ep.module())
    gm.meta["prunec_tracer"] = tracer
    gm.meta["prunec_exported_program"] = ep
    gm.meta["prunec_dynamic_dims"] = dynamic_dims(gm)
    gm.meta["prunec_static_reason"] = static_reason if not gm.meta["prunec_dynamic_dims"] else ""
    if dynamic and not gm.meta["prunec_dynamic_dims"] and not static_reason:
        gm.meta["prunec_static_reason"] = "the model pins every input dim"
    if gm.meta["prunec_dynamic_dims"]:
        # Pruning re-propagates shapes in the trace's symbolic setting; some ops' meta kernels take only
        # concrete sizes there (Bloom's alibi baddbmm, Swin's window pad, LSTM). Such a model is traced
        # statically instead, with the reason, rather than failing after pruning.
        reason = _symbolic_propagation_failure(gm)
        if reason:
            gm = trace(model, example_inputs, example_kwargs, dynamic=False)
            gm.meta["prunec_static_reason"] = reason
    return gm


def _symbolic_propagation_failure(gm: fx.GraphModule) -> str:
    """Why shapes do not re-propagate symbolically through ``gm`` ("" when they do)."""
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    from prunec.shapes import fake_inputs, propagation_mode

    # A trial run: FakeTensorProp rewrites every node's meta["val"], and the analysis must see the trace's own.
    saved = {node: node.meta.get("val") for node in gm.graph.nodes}
    mode = propagation_mode(gm)
    try:
        FakeTensorProp(gm, mode).propagate(*fake_inputs(gm, mode))
    except Exception as exc:  # noqa: BLE001 - any failure means: trace statically
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return f"shapes do not propagate symbolically ({type(exc).__name__}: {first})"
    finally:
        for node, val in saved.items():
            if val is None:
                node.meta.pop("val", None)
            else:
                node.meta["val"] = val
    return ""
