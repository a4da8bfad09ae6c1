"""Trace: a PyTorch model -> an ATen-level ``torch.fx.GraphModule``.

``torch.export.export(strict=False)`` first (parameters as ``get_attr`` nodes once
unlifted, ``meta["val"]`` on every node); ``torch.fx.symbolic_trace`` followed by
export of the traced module as a fallback.  Works for models on the ``meta``
device: only shapes are needed.
"""

from __future__ import annotations

import contextlib
import io
import logging
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
    _set_training(model, False)
    try:
        with _no_kv_cache(model), _quiet_torch_logs():
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
        _set_training(model, was_training)
    gm = ep.module()
    gm.meta["prunec_tracer"] = tracer
    gm.meta["prunec_exported_program"] = ep
    return gm
