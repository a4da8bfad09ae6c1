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
from prunec.errors import ConfigError
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


# Rows of the weight turned into float64 at a time when building the right-hand side: bounds the
# float64 temporaries to a few MB instead of a weight-sized (and a weight x Gram-sized) copy.
RHS_ROW_CHUNK = 256


@register_pass("least-squares-reconstruction", requires=("coupled groups analysed", "calibration statistics"), exact=False)
class LeastSquaresReconstruction:
    """Refit the kept input columns and bias of every linear layer that loses inputs.

    It *consumes* the Gram matrices it uses: each target's Gram matrix is removed from ``stats``
    and overwritten in place by that layer's normal equations and their Cholesky factor, so that
    the refit of a layer holds one Gram-sized buffer and one weight-sized right-hand side, and
    frees both before the next layer (what keeps streaming pruning within a third of the model).
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
            gram = self.stats.gram.pop(name)  # consumed: overwritten below
            solved = _normal_equations(gram, st.total, n, weight, b, keep, self.damping)
            _solve_in_place(gram, solved, name)  # solved: (out, |K|+1) = [W_K', b']
            del gram  # the Gram matrix (now the factor) goes before the new weight is allocated
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
                      keep: torch.Tensor, damping: float) -> torch.Tensor:
    """``rhs = [W, b] C[:, K+]`` (returned) and ``A = C[K+, K+] + damping`` (written over ``gram``).

    ``C`` is the second moment of ``[x; 1]`` and ``K+`` the kept channels plus the constant.  ``A``
    lands, as a C-contiguous ``(|K|+1)²`` matrix, in the first elements of ``gram``'s storage (read
    it with :func:`_packed_view`): neither ``C``, ``C[:, K+]``, ``A`` nor ``W`` in float64 is ever
    materialised beside the Gram matrix (each as large as it, or as the weight).
    """
    k = len(keep)
    mean = total / n
    kept_mean = mean[keep]
    rhs = torch.empty(w.shape[0], k + 1, dtype=torch.float64)
    for rows in torch.arange(w.shape[0]).split(RHS_ROW_CHUNK):
        w_rows = w[rows].double()
        rhs[rows, :k] = (w_rows @ gram)[:, keep]
        rhs[rows, k] = w_rows @ mean
    rhs[:, :k] /= n
    rhs[:, :k] += b[:, None] * kept_mean[None, :]
    rhs[:, k] += b
    a = _compact_in_place(gram, keep)
    a[:k, :k] /= n
    a[:k, k] = kept_mean
    a[k, :k] = kept_mean
    a[k, k] = 1.0
    a.diagonal().add_(damping * a.diagonal().mean())
    return rhs


def _packed_view(gram: torch.Tensor, size: int) -> torch.Tensor:
    """The C-contiguous ``size x size`` matrix held in the first ``size²`` elements of ``gram``."""
    return gram.view(-1)[: size * size].view(size, size)


def _compact_in_place(gram: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Move ``gram[keep][:, keep]`` into the top-left of ``gram``'s storage, row stride ``len(keep) + 1``.

    Row ``i`` is written to elements ``[i*(k+1), i*(k+1)+k)``; every source row still to be read,
    ``keep[j]`` for ``j > i``, starts at ``keep[j]*d >= (i+1)*d``, past that range (``k+1 <= d``
    because at least one channel is removed), so the move overwrites nothing it still needs.
    """
    d, k = gram.shape[0], len(keep)
    if k + 1 > d:
        raise ValueError("compaction needs at least one removed channel")
    flat = gram.view(-1)
    for i, row in enumerate(keep.tolist()):
        flat[i * (k + 1): i * (k + 1) + k] = gram[row, keep]  # the gather copies the row first
    return _packed_view(gram, k + 1)


def _solve_in_place(gram: torch.Tensor, rhs: torch.Tensor, name: str) -> None:
    """Overwrite ``rhs`` (``out x (k+1)``) with ``rhs A^-1`` for ``A`` packed in ``gram``, by Cholesky.

    LAPACK's ``potrf``/``potrs`` through SciPy, on Fortran-ordered views of the two buffers: no
    copy of either (``torch.linalg.cholesky_ex(out=)`` and ``cholesky_solve(out=)`` measured here
    still allocate an ``A``- and a ``rhs``-sized temporary).  ``A`` is symmetric, so its transposed
    view is itself."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    a = _packed_view(gram, rhs.shape[1])
    try:
        factor = cho_factor(a.numpy().T, lower=True, overwrite_a=True, check_finite=False)
    except LinAlgError:
        raise ConfigError(f"least-squares refit of {name}: the damped normal equations are not positive "
                                  "definite; use a positive damping (the default is 1e-3)") from None
    out = cho_solve(factor, rhs.numpy().T, overwrite_b=True, check_finite=False)
    if not np.shares_memory(out, rhs.numpy()):  # SciPy copies when it cannot solve in place
        rhs.copy_(torch.from_numpy(out.T))
