"""Trace: a PyTorch model -> an ATen-level ``torch.fx.GraphModule``.

``torch.export.export(strict=False)`` first (parameters as ``get_attr`` nodes once
unlifted, ``meta["val"]`` on every node); ``torch.fx.symbolic_trace`` followed by
export of the traced module as a fallback.  Works for models on the ``meta``
device: only shapes are needed.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import torch
import torch.fx as fx

from prunec.errors import TraceError


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


def _as_tuple(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)


def _describe(exc: BaseException) -> str:
    """The first informative line of a tracing failure, naming the op or module if it can."""
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    match = re.search(r"(aten\.[\w.]+|torch\.ops\.[\w.]+)", text)
    where = f" (at {match.group(1)})" if match and match.group(1) not in first else ""
    return f"{type(exc).__name__}: {first[:300]}{where}"


def trace(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
) -> fx.GraphModule:
    """Trace ``model`` on ``example_inputs`` into an ATen-level FX graph.

    Returns the unlifted ``GraphModule`` of ``torch.export`` (callable with the same
    inputs as the model); ``gm.meta["prunec_tracer"]`` says which tracer succeeded.
    Raises :class:`~prunec.errors.TraceError` with the failing op or module named.
    """
    args = _as_tuple(example_inputs)
    kwargs = dict(example_kwargs or {})
    was_training = model.training
    model.eval()
    try:
        with _no_kv_cache(model):
            try:
                ep = torch.export.export(model, args, kwargs, strict=False)
                tracer = "torch.export"
            except Exception as export_exc:  # noqa: BLE001 - every tracer failure is reported below
                try:
                    symbolic = fx.symbolic_trace(model)
                    ep = torch.export.export(symbolic, args, kwargs, strict=False)
                    tracer = "torch.fx.symbolic_trace+torch.export"
                except Exception:  # noqa: BLE001
                    raise TraceError(
                        f"cannot trace {type(model).__name__}: {_describe(export_exc)}; "
                        "make the failing code traceable (no data-dependent Python control flow) "
                        "or pass example inputs that match the model"
                    ) from export_exc
    finally:
        model.train(was_training)
    gm = ep.module()
    gm.meta["prunec_tracer"] = tracer
    gm.meta["prunec_exported_program"] = ep
    return gm
