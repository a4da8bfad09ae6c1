"""Export a (pruned) module with the dynamo ONNX exporter and compare ONNX Runtime to PyTorch."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import pytest
import torch

from prunec.testing import max_abs_diff


def onnx_max_abs_diff(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> float:
    """Largest |ONNX Runtime - PyTorch| over all outputs of ``module`` on ``args``."""
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install 'prunec[onnx]')")
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    with torch.no_grad():
        reference = module(*args, **kwargs)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, kwargs=kwargs or None, dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    flat = [a for a in args if isinstance(a, torch.Tensor)] + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), flat)}
    outputs = session.run(None, feeds)
    return max_abs_diff(reference, tuple(torch.from_numpy(o) for o in outputs))
