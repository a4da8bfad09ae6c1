"""Least-squares reconstruction of the layers that read removed units.

For a linear layer ``y = W x + b`` that loses input channels, the kept columns
and the bias are refitted so that the layer's output on the calibration inputs
changes as little as possible::

    [W_K', b'] = argmin E || W x + b - (W_K' x_K + b') ||^2
               = [W, b] C[:, K+] (C[K+, K+] + damping)^-1

with ``C`` the second-moment matrix of ``[x; 1]`` and ``K+`` the kept channels plus
the constant.  This subsumes bias compensation.  Run before structured removal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx

from prunec.analysis.analyze import Analysis
from prunec.pass_api import PassResult, register_pass
from prunec.attrs import get_path, set_tensor
from prunec.passes.bias_compensation import _linear_nodes_by_weight, add_to_bias
from prunec.stats import CalibrationStats


def reconstruction_targets(analysis: Analysis, removed: dict[int, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Linear weights that read removed units, with the input positions they lose."""
    linears = _linear_nodes_by_weight(analysis.graph_module)
    lost: dict[str, set[int]] = {}
    for gid, units in removed.items():
        group = analysis.groups[gid]
        for m in group.members:
            if m.shared or m.dim != 1 or m.name not in linears:
                continue
            if len(analysis.aliases.get(m.name, ())) > 1 or len(linears[m.name]) != 1:
                continue  # a tied weight (lm_head = embedding) or one read twice cannot be refitted for one use
            coords = analysis.unit_coords(group, m)
            lost.setdefault(m.name, set()).update(np.flatnonzero(np.isin(coords, units)).tolist())
    return {name: np.array(sorted(p)) for name, p in lost.items() if p}


@register_pass("least-squares-reconstruction", requires=("coupled groups analysed", "calibration statistics"), exact=False)
class LeastSquaresReconstruction:
    """Refit the kept input columns and bias of every linear layer that loses inputs."""

    def __init__(self, analysis: Analysis, removed: dict[int, tuple[int, ...]], stats: CalibrationStats,
                 damping: float = 1e-3) -> None:
        self.analysis = analysis
        self.removed = removed
        self.stats = stats
        self.damping = damping

    def __call__(self, gm: fx.GraphModule) -> PassResult:
        targets = reconstruction_targets(self.analysis, self.removed)
        linears = _linear_nodes_by_weight(gm)
        changed = False
        for name, lost in targets.items():
            if name not in self.stats.gram:
                continue
            node = linears[name][0]
            weight = get_path(gm, name)
            w = weight.detach().double()
            d = w.shape[1]
            st = self.stats.inputs[name]
            n = max(st.count, 1)
            c = torch.empty(d + 1, d + 1, dtype=torch.float64)
            c[:d, :d] = self.stats.gram[name] / n
            c[:d, d] = c[d, :d] = st.total / n
            c[d, d] = 1.0
            bias_node = node.args[2] if len(node.args) > 2 else None
            b = get_path(gm, str(bias_node.target)).detach().double() if bias_node is not None else torch.zeros(w.shape[0], dtype=torch.float64)
            keep = np.setdiff1d(np.arange(d), lost)
            k_plus = torch.as_tensor(np.append(keep, d), dtype=torch.long)
            a = c[k_plus][:, k_plus]
            a = a + self.damping * torch.diagonal(a).mean() * torch.eye(len(k_plus), dtype=torch.float64)
            wb = torch.cat([w, b[:, None]], dim=1)
            rhs = wb @ c[:, k_plus]
            solved = torch.linalg.solve(a, rhs.T).T  # (out, |K|+1)
            new_w = torch.zeros_like(w)
            new_w[:, torch.as_tensor(keep, dtype=torch.long)] = solved[:, :-1]
            set_tensor(gm, name, new_w.to(weight.dtype))
            delta = (solved[:, -1] - b).to(weight.dtype)
            add_to_bias(self.analysis, gm, node, name, delta)
            changed = True
        gm.recompile()
        return PassResult(gm, modified=changed)
