"""The exactness oracle, reusable by tests, the zoo and users' own CI.

Structured removal must be exact where theory says so: if every weight that a
unit owns or reads is zero, the unit is dead, and removing it cannot change the
model's outputs.  :func:`kill_units` makes chosen units dead in place;
:func:`check_dead_unit_exactness` kills, prunes with magnitude importance (dead
units score 0, so exactly they go) and compares outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from prunec.allocation import uniform_count
from prunec.attrs import get_path
from prunec.analysis.analyze import Analysis
from prunec.analysis.groups import DEFAULT_KINDS, weight_members
from prunec.prune import PruneResult, analyze, prune, select_groups


def choose_dead_units(analysis: Analysis, ratio: float, kinds: Sequence[str], seed: int = 0,
                      model: torch.nn.Module | None = None) -> dict[int, tuple[int, ...]]:
    """Random units, as many per group as uniform allocation at ``ratio`` removes.

    With ``model``, counts follow the same config constraints as :func:`prunec.prune`
    (a Hugging Face LLaMA keeps ``hidden % heads == 0``).
    """
    rng = np.random.default_rng(seed)
    out: dict[int, tuple[int, ...]] = {}
    for g in select_groups(analysis, kinds):
        count = uniform_count(g, ratio)
        if count <= 0:
            continue
        if g.blocks > 1:
            per_block = g.size // g.blocks
            units = [b * per_block + int(i) for b in range(g.blocks)
                     for i in rng.choice(per_block, count // g.blocks, replace=False)]
        else:
            units = [int(i) for i in rng.choice(g.size, count, replace=False)]
        out[g.id] = tuple(sorted(units))
    if model is not None:
        from prunec.hf import fit_config_constraints

        out = fit_config_constraints(model, analysis, out, {gid: rng.random(analysis.groups[gid].size) for gid in out})
    return out


@torch.no_grad()
def kill_units(model: torch.nn.Module, analysis: Analysis, units: dict[int, tuple[int, ...]]) -> None:
    """Zero the weight slices of the given units, in ``model``'s own tensors.

    Only weights (``weight_members``): BatchNorm running statistics keep their values, as in a trained
    net whose channel died, so the oracle also checks that scores ignore statistics.
    """
    for gid, chosen in units.items():
        group = analysis.groups[gid]
        for m in weight_members(group.members):
            coords = analysis.unit_coords(group, m)
            positions = np.flatnonzero(np.isin(coords, chosen))
            tensor = get_path(model, m.name)
            index = torch.as_tensor(positions, dtype=torch.long)
            tensor.data.index_fill_(m.dim, index, 0.0)


@dataclass
class ExactnessReport:
    max_abs_diff: float
    expected_units: dict[int, tuple[int, ...]]
    result: PruneResult


def _outputs(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict) or hasattr(obj, "to_tuple"):
        obj = obj.to_tuple() if hasattr(obj, "to_tuple") else tuple(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _outputs(o)]
    return []


def flatten_outputs(obj: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) model output in order: a tensor, ModelOutput, dict, tuple or list."""
    return _outputs(obj)


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two (nested) model outputs of equal structure."""
    xs, ys = _outputs(a), _outputs(b)
    if len(xs) != len(ys):
        raise AssertionError(f"outputs differ in structure: {len(xs)} vs {len(ys)} tensors")
    return max((float((x.float() - y.float()).abs().max()) for x, y in zip(xs, ys) if x.numel()), default=0.0)


def check_dead_unit_exactness(
    model: torch.nn.Module,
    example_inputs: Any,
    example_kwargs: dict[str, Any] | None = None,
    *,
    ratio: float = 0.3,
    kinds: Sequence[str] = DEFAULT_KINDS,
    seed: int = 0,
) -> ExactnessReport:
    """Kill random units in ``model`` (in place), prune them, return the output difference."""
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    kwargs = dict(example_kwargs or {})
    analysis = analyze(model, args, kwargs)
    units = choose_dead_units(analysis, ratio, kinds, seed, model)
    kill_units(model, analysis, units)
    model.eval()
    with torch.no_grad():
        reference = model(*args, **kwargs)
    result = prune(model, args, kwargs, ratio=ratio, kinds=kinds, importance="l2", allocation="uniform")
    with torch.no_grad():
        pruned = result.module(*args, **kwargs)
    # prune() may have fallen back to a static trace, whose groups are numbered on their own.
    fell_back = bool(analysis.graph_module.meta.get("prunec_dynamic_dims")) and not result.dynamic_dims
    expected = _same_groups(units, analysis, result.analysis) if fell_back else units
    return ExactnessReport(max_abs_diff(reference, pruned), expected, result)


def _same_groups(units: dict[int, tuple[int, ...]], src: Analysis, dst: Analysis) -> dict[int, tuple[int, ...]]:
    """``units`` keyed by ``dst``'s ids for the same groups: same kind, size and member slices."""
    def key(g):
        return g.kind, g.size, frozenset((m.name, m.dim, m.shared) for m in g.members)

    ids = {key(g): g.id for g in dst.groups}
    return {ids.get(key(src.groups[gid]), -1 - gid): chosen for gid, chosen in units.items()}
