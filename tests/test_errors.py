"""Bad input gets a clear, typed error and loses nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import prunec
from models import ALL_CASES
from prunec.output import atomic_output_dir


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc(x).sum() > 0:  # Python control flow on a tensor value
            return self.fc(x)
        return -x


def test_untraceable_model_raises_trace_error() -> None:
    with pytest.raises(prunec.TraceError) as info:
        prunec.trace(DataDependent(), (torch.randn(2, 4),))
    message = str(info.value)
    assert "DataDependent" in message and "\n" not in message
    assert "control flow" in message and "test_errors.py" in message, "the failing user code is named"


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "0.3"])
def test_ratio_outside_unit_interval(ratio) -> None:
    model, args, kwargs = ALL_CASES["residual_mlp"]()
    with pytest.raises(prunec.ConfigError, match=r"ratio must be in \[0, 1\)"):
        prunec.prune(model, args, kwargs, ratio=ratio)


def test_unknown_kind_importance_allocation() -> None:
    model, args, kwargs = ALL_CASES["residual_mlp"]()
    with pytest.raises(prunec.ConfigError, match="unknown kind"):
        prunec.prune(model, args, kwargs, kinds=("filters",))
    with pytest.raises(prunec.ConfigError, match="unknown importance 'taylor2'"):
        prunec.prune(model, args, kwargs, importance="taylor2")
    with pytest.raises(prunec.ConfigError, match="unknown allocation"):
        prunec.prune(model, args, kwargs, allocation="greedy")


def test_errors_are_prune_errors_with_exit_codes() -> None:
    codes = {cls: cls.exit_code for cls in (prunec.ConfigError, prunec.ModelLoadError, prunec.TraceError,
                                            prunec.TransformError, prunec.OutputExistsError)}
    assert all(issubclass(cls, prunec.PruneError) for cls in codes)
    assert len(set(codes.values())) == len(codes), "each error class has its own exit code"


def test_magnitude_importance_needs_weights() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2))
    ids = torch.zeros(1, 8, dtype=torch.long, device="meta")
    with pytest.raises(prunec.ConfigError, match="meta device"):
        prunec.prune(model, (ids,), ratio=0.3)


def test_atomic_output_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_existing_and_replaces_with_overwrite(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(prunec.OutputExistsError):
        with atomic_output_dir(target):
            pass
    assert (target / "keep.txt").read_text() == "old"
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
