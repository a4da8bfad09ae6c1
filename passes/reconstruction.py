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


# Rows of the (float32) Gram matrix widened to float64 at a time while building the normal
# equations: bounds the float64 temporaries to a few MB instead of Gram- or weight-sized copies.
GRAM_ROW_CHUNK = 256
# Relative singular values below this are rounding noise of a float32 Gram matrix (fallback solve only).
RCOND = 1e-6


@register_pass("least-squares-reconstruction", requires=("coupled groups analysed", "calibration statistics"), exact=False)
class LeastSquaresReconstruction:
    """Refit the kept input columns and bias of every linear layer that loses inputs.

    It *consumes* the Gram matrices it uses: each target's Gram matrix is removed from ``stats``
    and freed once that layer's float64 normal equations are built; the equations are factored
    and solved in place.  A layer's refit holds its float32 Gram matrix, the float64 ``A`` and
    a weight-sized right-hand side at most, and frees them before the next layer (what keeps
    streaming pruning within a third of the model).
    """

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
            weight = get_path(gm, name).detach()
            st = self.stats.inputs[name]
            n = max(st.count, 1)
            bias_node = node.args[2] if len(node.args) > 2 else None
            b = get_path(gm, str(bias_node.target)).detach().double() if bias_node is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
            keep = torch.as_tensor(np.setdiff1d(np.arange(weight.shape[1]), lost), dtype=torch.long)
            gram = self.stats.gram.pop(name)  # consumed: freed once the equations are solved
            a, solved = _normal_equations(gram, st.total, n, weight, b, keep, self.damping)
            if not _solve_in_place(a, solved):  # solved: (out, |K|+1) = [W_K', b']
                # Not positive definite (damping below the float32 Gram matrix's rounding): the
                # factorisation spoilt ``a``; rebuild it and take the minimum-norm least-squares solution.
                a, rhs = _normal_equations(gram, st.total, n, weight, b, keep, self.damping)
                solved = _min_norm_solve(a, rhs)
            del gram, a  # the Gram matrix and the factor go before the new weight is allocated
            new_w = torch.zeros(weight.shape, dtype=weight.dtype)
            new_w[:, keep] = solved[:, :-1].to(weight.dtype)
            set_tensor(gm, name, new_w)
            delta = (solved[:, -1] - b).to(weight.dtype)
            del solved, weight
            add_to_bias(self.analysis, gm, node, name, delta)
            changed = True
        gm.recompile()
        return PassResult(gm, modified=changed)


def _normal_equations(gram: torch.Tensor, total: torch.Tensor, n: int, w: torch.Tensor, b: torch.Tensor,
                      keep: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = C[K+, K+] + damping`` and ``rhs = [W, b] C[:, K+]``, in float64, for ``C`` the second moment of ``[x; 1]``.

    ``K+`` is the kept channels plus the constant.  Built ``GRAM_ROW_CHUNK`` Gram rows at a time
    (``W C[:, K] = sum_J W[:, J] C[J, K]``), without materialising ``C``, ``C[:, K+]``, the Gram
    matrix or ``W`` in float64 (each as large as the Gram matrix or the weight).
    """
    k = len(keep)
    mean = total / n
    kept_mean = mean[keep]
    a = torch.empty(k + 1, k + 1, dtype=torch.float64)
    rhs = torch.zeros(w.shape[0], k + 1, dtype=torch.float64)
    position = torch.full((gram.shape[0],), -1, dtype=torch.long)
    position[keep] = torch.arange(k)
    for start in range(0, gram.shape[0], GRAM_ROW_CHUNK):
        rows = slice(start, start + GRAM_ROW_CHUNK)
        g_rows = gram[rows][:, keep].double()  # C[J, K] * n
        rhs[:, :k] += w[:, rows].double() @ g_rows
        kept = position[rows] >= 0
        a[position[rows][kept], :k] = g_rows[kept]
    a[:k, :k] /= n
    a[:k, k] = kept_mean
    a[k, :k] = kept_mean
    a[k, k] = 1.0
    a.diagonal().add_(damping * a.diagonal().mean())
    rhs[:, :k] /= n
    rhs[:, :k] += b[:, None] * kept_mean[None, :]
    rhs[:, k] = _matvec(w, mean) + b
    return a, rhs


def _matvec(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``w.double() @ v`` without a float64 copy of ``w``."""
    out = torch.zeros(w.shape[0], dtype=torch.float64)
    for start in range(0, w.shape[1], GRAM_ROW_CHUNK):
        cols = slice(start, start + GRAM_ROW_CHUNK)
        out += w[:, cols].double() @ v[cols]
    return out


def _solve_in_place(a: torch.Tensor, rhs: torch.Tensor) -> bool:
    """Overwrite ``rhs`` (``out x (k+1)``) with ``rhs A^-1`` by Cholesky, factoring ``A`` in place;
    ``False`` (``A`` spoilt, ``rhs`` untouched) when ``A`` is not positive definite.

    LAPACK's ``potrf``/``potrs`` through SciPy, on Fortran-ordered views of the two buffers: no
    copy of either (``torch.linalg.cholesky_ex(out=)`` and ``cholesky_solve(out=)`` measured here
    still allocate an ``A``- and a ``rhs``-sized temporary).  ``A`` is symmetric, so its transposed
    view is itself."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        factor = cho_factor(a.numpy().T, lower=True, overwrite_a=True, check_finite=False)
    except LinAlgError:
        return False
    out = cho_solve(factor, rhs.numpy().T, overwrite_b=True, check_finite=False)
    if not np.shares_memory(out, rhs.numpy()):  # SciPy copies when it cannot solve in place
        rhs.copy_(torch.from_numpy(out.T))
    return True


def _min_norm_solve(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``rhs A^-1`` for a singular or indefinite symmetric ``A``: the minimum-norm least-squares
    solution, ignoring directions below the float32 resolution of the Gram matrix ``A`` came from."""
    return torch.linalg.lstsq(a, rhs.T, rcond=RCOND, driver="gelsd").solution.T.contiguous()
