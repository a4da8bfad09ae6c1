"""The memory-lean least-squares refit: float32 Gram accumulation, chunked normal equations, an
in-place Cholesky solve, and streaming's parking of the weights the refit does not touch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

import prunec
from prunec.attrs import get_path
from prunec.stats import GRAM_DTYPE, GRAM_ROW_CHUNK, collect_input_stats

WIDTH = 600  # wider than the Gram and refit row chunks, so that both are exercised in pieces


def _wide_mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 5)).eval()
    return model, torch.randn(256, 8)


def _calibrated(model: nn.Module, x: torch.Tensor):
    analysis = prunec.analyze(model, (x[:128],))
    group = next(g for g in analysis.prunable_groups if g.size == WIDTH)
    readers = {m.name for m in group.members if m.dim == 1}
    stats = collect_input_stats(analysis.graph_module, [(x[:128],), (x[128:],)], covariance_for=readers)
    (name,) = readers
    return analysis, group, stats, name


def test_gram_is_float32_and_matches_the_float64_product() -> None:
    assert WIDTH > GRAM_ROW_CHUNK
    model, x = _wide_mlp()
    _, _, stats, name = _calibrated(model, x)
    with torch.no_grad():
        act = torch.relu(model[0](x)).double()
    reference = act.T @ act
    gram = stats.gram[name]
    assert gram.dtype == GRAM_DTYPE == torch.float32
    torch.testing.assert_close(gram.double(), reference, rtol=1e-6, atol=1e-6 * float(reference.abs().max()))


def test_refit_matches_the_dense_normal_equations_and_consumes_the_gram() -> None:
    from prunec.passes.reconstruction import LeastSquaresReconstruction

    model, x = _wide_mlp()
    analysis, group, stats, name = _calibrated(model, x)
    gm = analysis.graph_module
    removed = {group.id: tuple(range(0, WIDTH, 4))}
    damping = 1e-3
    # The textbook formulation, dense and in float64, from the same (float32) statistics.
    st = stats.inputs[name]
    n = st.count
    c = torch.zeros(WIDTH + 1, WIDTH + 1, dtype=torch.float64)
    c[:WIDTH, :WIDTH] = stats.gram[name].double() / n
    c[:WIDTH, WIDTH] = c[WIDTH, :WIDTH] = st.total / n
    c[WIDTH, WIDTH] = 1.0
    keep = np.setdiff1d(np.arange(WIDTH), removed[group.id])
    kept = torch.as_tensor(np.append(keep, WIDTH))
    a = c[kept][:, kept]
    a += damping * a.diagonal().mean() * torch.eye(len(kept), dtype=torch.float64)
    bias_name = name.rsplit(".", 1)[0] + ".bias"
    wb = torch.cat([get_path(gm, name).detach().double(), get_path(gm, bias_name).detach().double()[:, None]], 1)
    solved = torch.linalg.solve(a, (wb @ c[:, kept]).T).T
    expected_w = torch.zeros(5, WIDTH, dtype=torch.float64)
    expected_w[:, keep] = solved[:, :-1]

    assert LeastSquaresReconstruction(analysis, removed, stats, damping=damping)(gm).modified
    assert name not in stats.gram, "the refit frees the Gram matrix it used"
    scale = float(expected_w.abs().max())
    torch.testing.assert_close(get_path(gm, name).double(), expected_w, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(get_path(gm, bias_name).double(), solved[:, -1], rtol=0, atol=1e-5 * scale)


def test_cholesky_solve_is_in_place_and_reports_an_indefinite_matrix() -> None:
    from prunec.passes.reconstruction import _solve_in_place

    gen = torch.Generator().manual_seed(0)
    m = torch.randn(60, 50, generator=gen, dtype=torch.float64)
    a = m.T @ m + 0.1 * torch.eye(50, dtype=torch.float64)
    rhs = torch.randn(7, 50, generator=gen, dtype=torch.float64)
    expected = torch.linalg.solve(a, rhs.T).T
    pointer = rhs.data_ptr()
    assert _solve_in_place(a.clone(), rhs)
    assert rhs.data_ptr() == pointer
    torch.testing.assert_close(rhs, expected)
    indefinite = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    untouched = torch.ones(2, 3, dtype=torch.float64)
    assert not _solve_in_place(indefinite, untouched)
    assert torch.equal(untouched, torch.ones(2, 3, dtype=torch.float64))


def test_parked_weights_are_placeholders_during_the_refit_and_come_back() -> None:
    from prunec.streaming import _parked

    model, x = _wide_mlp()
    gm = prunec.analyze(model, (x[:128],)).graph_module
    original = {name: p.detach().clone() for name, p in gm.named_parameters()}
    keep = {"2.weight", "2.bias"}
    assert keep < set(original)
    asked: list[list[str]] = []

    def reload(names: list[str]) -> dict[str, torch.Tensor]:
        asked.append(names)
        return {n: original[n].clone() for n in names}

    with _parked(gm, keep, reload):
        for name, p in gm.named_parameters():
            assert (p.device.type == "meta") == (name not in keep), name
    assert sorted(asked[0]) == sorted(set(original) - keep)
    for name, p in gm.named_parameters():
        assert p.device.type == "cpu" and torch.equal(p, original[name]), name
