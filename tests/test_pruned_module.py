"""The pruned module behaves like a PyTorch module: other shapes, train()/eval(), state_dict, .pt2.

Each property is checked across the zoo (tests/zoo/cases.py); a handful of cases run by default,
the whole sweep is ``-m slow``.  Units are made dead before pruning, so the pruned module must also
match the original on an input of another batch size and length/resolution.
"""

from __future__ import annotations

import functools
import io

import pytest
import torch
import torch.nn as nn
import torch.utils._pytree as pytree

import prunec
from models import randomize_
from prunec.analysis.groups import KINDS
from prunec.module import MODE_FLAGS, export_program
from prunec.testing import choose_dead_units, kill_units, max_abs_diff
from zoo.cases import CASES, ZooCase

TOLERANCE = 1e-5
FAST = {"llama_gqa", "bert", "resnet"}


@functools.lru_cache(maxsize=None)
def pruned(name: str):
    """(original with dead units, example args, kwargs, prune result): pruned once per case."""
    case = next(c for c in CASES if c.name == name)
    model, args, kwargs = case.build()
    randomize_(model)
    analysis = prunec.analyze(model, args, kwargs)
    kill_units(model, analysis, choose_dead_units(analysis, 0.3, KINDS, 0, model))
    model.eval()
    result = prunec.prune(model, args, kwargs, ratio=0.3, kinds=KINDS, importance="l2")
    return model, args, kwargs, result


def second_input(args: tuple, kwargs: dict, dynamic_dims: dict, module: nn.Module | None = None) -> tuple[tuple, dict]:
    """The example with every dynamic dim doubled (tiled, so ids and masks stay valid).

    A model may bound a dynamic length/resolution (MobileViT: at most the traced one); where the
    module's guard rejects the doubled input, only the batch is doubled."""
    if module is not None:
        candidate = second_input(args, kwargs, dynamic_dims)
        try:
            with torch.no_grad():
                module(*candidate[0], **candidate[1])
            return candidate
        except AssertionError as exc:
            if "Guard failed" not in str(exc):
                raise
        return second_input(args, kwargs, {k: tuple(d for d in v if d == 0) for k, v in dynamic_dims.items()})
    dims = list(dynamic_dims.values())
    leaves, spec = pytree.tree_flatten((args, kwargs))
    tensors = iter(dims)
    out = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            for d in next(tensors, ()):
                leaf = torch.cat([leaf, leaf], d)
        out.append(leaf)
    return pytree.tree_unflatten(out, spec)


def _params():
    return [pytest.param(c.name, id=c.name, marks=() if c.name in FAST else (pytest.mark.slow,))
            for c in CASES if not c.known_bug]


@pytest.mark.parametrize("name", _params())
def test_runs_and_matches_on_another_batch_and_length(name: str) -> None:
    model, args, kwargs, result = pruned(name)
    assert result.dynamic_dims or result.static_reason
    if not result.dynamic_dims:
        pytest.skip(f"traced statically: {result.static_reason}")
    args2, kwargs2 = second_input(args, kwargs, result.dynamic_dims, result.module)
    with torch.no_grad():
        assert max_abs_diff(model(*args, **kwargs), result.module(*args, **kwargs)) <= TOLERANCE
        assert max_abs_diff(model(*args2, **kwargs2), result.module(*args2, **kwargs2)) <= TOLERANCE


@pytest.mark.parametrize("name", _params())
def test_train_and_eval_switch_the_graph_modes(name: str) -> None:
    model, args, kwargs, result = pruned(name)
    pm = result.module
    flags = lambda: [n.args[MODE_FLAGS[n.target]] for n in pm.graph.nodes if n.target in MODE_FLAGS]  # noqa: E731
    assert pm.train() is pm and pm.training and all(flags())
    assert pm.eval() is pm and not pm.training and not any(flags())
    with torch.no_grad():
        assert max_abs_diff(model(*args, **kwargs), pm(*args, **kwargs)) <= TOLERANCE


@pytest.mark.parametrize("name", _params())
def test_state_dict_round_trip(name: str) -> None:
    _, args, kwargs, result = pruned(name)
    buffer = io.BytesIO()
    torch.save(result.module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert state.keys() == result.module.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in result.module.state_dict().items())
    # Loading it back undoes a change to the weights.
    pm = result.module
    with torch.no_grad():
        before = pm(*args, **kwargs)
        for p in pm.parameters():
            p.add_(1.0)
    pm.load_state_dict(state)
    with torch.no_grad():
        assert max_abs_diff(before, pm(*args, **kwargs)) == 0.0


@pytest.mark.parametrize("name", _params())
def test_pt2_save_and_load_keeps_dynamic_dims(name: str) -> None:
    _, args, kwargs, result = pruned(name)
    program = export_program(result.module, args, kwargs, dynamic=bool(result.dynamic_dims))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    args2, kwargs2 = second_input(args, kwargs, result.dynamic_dims, result.module)
    with torch.no_grad():
        assert max_abs_diff(result.module(*args2, **kwargs2), loaded(*args2, **kwargs2)) <= TOLERANCE


class _DropBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.drop, self.fc = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(self.conv(x)).relu().mean((2, 3))))


def test_train_mode_uses_dropout_and_batch_statistics() -> None:
    model = _DropBN().eval()
    pm = prunec.prune(model, (torch.randn(1, 3, 16, 16),), ratio=0.25).module
    x = torch.randn(3, 3, 20, 24)  # another batch and resolution
    pm.train()
    running = pm.bn.running_mean.clone()
    assert not torch.equal(pm(x), pm(x))  # dropout is active
    assert not torch.equal(running, pm.bn.running_mean)  # batch norm updated its running mean
    pm.eval()
    assert torch.equal(pm(x), pm(x))


def test_static_shapes_pin_the_example() -> None:
    model = _DropBN().eval()
    result = prunec.prune(model, (torch.randn(1, 3, 16, 16),), ratio=0.25, dynamic=False)
    assert result.dynamic_dims == {} and result.static_reason == "static shapes asked for"
    with pytest.raises(Exception, match="Guard failed"):
        result.module(torch.randn(2, 3, 16, 16))
