"""BrownianTree: the law of increments, Levy areas and bridges (tolerances in standard
errors), identical answers whatever the query order, rows and grids, bounded memory."""

import math

import pytest
import torch

from dynvae.errors import DataError
from dynvae.sde import BrownianTree
from dynvae.sde.brownian_tree import hashed_normals

F64 = torch.float64
N = 20000   # independent rows: every sample moment below has its standard error
K = 5.0     # tolerance in standard errors


def _standard_normal_moments(x: torch.Tensor) -> None:
    """Columns of x (n, m) are N(0, 1): mean within K/sqrt(n), mean square within
    K sqrt(2/n) of 1."""
    n = x.shape[0]
    assert (x.mean(0).abs() < K / math.sqrt(n)).all(), x.mean(0)
    assert ((x.pow(2).mean(0) - 1).abs() < K * math.sqrt(2 / n)).all(), x.pow(2).mean(0)


def _uncorrelated(x: torch.Tensor) -> None:
    """Off-diagonal sample correlations of the columns of x (n, m) within K/sqrt(n)."""
    c = torch.corrcoef(x.T)
    off = c - torch.diag(torch.diag(c))
    assert off.abs().max() < K / math.sqrt(x.shape[0]), off.abs().max()


def test_hashed_normals_are_standard_and_independent():
    z = hashed_normals(torch.tensor([3]), torch.arange(N), 6)                  # (N, 6)
    _standard_normal_moments(z)
    _uncorrelated(z)
    # fourth moment 3 (a Gaussian tail, not a uniform or a clipped one): SE sqrt(96 / n)
    assert ((z.pow(4).mean(0) - 3).abs() < K * math.sqrt(96 / N)).all()
    other = hashed_normals(torch.tensor([4]), torch.arange(N), 6)
    _uncorrelated(torch.cat([z, other], 1))


def test_increments_levy_areas_and_disjoint_intervals():
    bm = BrownianTree(0.0, 2.0, (N, 2), tol=1e-3, seed=1)
    t = torch.tensor([0.0, 0.013, 0.3, 0.35, 1.0, 1.7, 2.0], dtype=F64)   # irregular
    dw, area = bm.increments(t)                                               # (N, 6, 2)
    h = torch.diff(t).unsqueeze(-1)
    zw = (dw / h.sqrt()).reshape(N, -1)
    za = (area / (h / 12).sqrt()).reshape(N, -1)
    _standard_normal_moments(zw)
    _standard_normal_moments(za)
    # disjoint intervals, the two coordinates and dW vs H: all independent
    _uncorrelated(torch.cat([zw, za], 1))


def test_covariance_is_min_of_times_across_leaves():
    bm = BrownianTree(0.5, 3.0, (N, 1), tol=2e-2, seed=2)
    s = torch.tensor([0.5, 0.61, 0.9, 1.33, 2.0, 2.95, 3.0], dtype=F64)
    w = bm.value(s)[..., 0]                                                   # (N, 7)
    assert torch.equal(w[:, 0], torch.zeros(N, dtype=F64))
    emp = w.T @ w / N
    exact = torch.minimum(s[:, None], s[None, :]) - 0.5
    se = ((exact.diag()[:, None] * exact.diag()[None, :] + exact ** 2) / N).sqrt()
    assert ((emp - exact).abs() <= K * se + 1e-12).all(), (emp - exact) / se


@pytest.mark.parametrize("s", [1.0, 0.37, 1.61])   # a node boundary, inside leaves
def test_bridge_conditional_mean_and_variance(s):
    """Given W(T): E[W(s)] = (s / T) W(T), Var = s (T - s) / T. Given also the root's
    Levy area H: E[W(s)] = p W(T) + 6 p q H, Var = T p q (1 - 3 p q), p = s / T."""
    T = 2.0
    bm = BrownianTree(0.0, T, (N, 1), tol=1e-2, seed=3)
    w_s = bm.value(torch.tensor([s], dtype=F64))[:, 0, 0]
    dw, area = (x[:, 0, 0] for x in bm.increments(torch.tensor([0.0, T], dtype=F64)))
    p = s / T
    q = 1 - p
    for regressors, mean_coef, var in (
            ([dw], [p], T * p * q),
            ([dw, area], [p, 6 * p * q], T * p * q * (1 - 3 * p * q))):
        X = torch.stack(regressors, 1)
        coef = torch.linalg.lstsq(X, w_s[:, None]).solution[:, 0]
        resid = w_s - X @ coef
        se_coef = (resid.var() * torch.linalg.inv(X.T @ X).diag()).sqrt()
        assert ((coef - torch.tensor(mean_coef, dtype=F64)).abs() < K * se_coef).all()
        assert abs(float(resid.var()) / var - 1) < K * math.sqrt(2 / N)


def test_any_query_order_gives_the_same_numbers():
    t = torch.linspace(0.0, 1.0, 33, dtype=F64)
    forward = BrownianTree(0.0, 1.0, (5, 3), tol=2e-3, seed=4)
    dw, area = forward.increments(t)
    backward = BrownianTree(0.0, 1.0, (5, 3), tol=2e-3, seed=4)
    for i in reversed(range(32)):   # the adjoint's backward pass
        dwi, ai = backward.increments(t[i:i + 2])
        assert torch.equal(dwi[:, 0], dw[:, i]) and torch.equal(ai[:, 0], area[:, i])
    shuffled = BrownianTree(0.0, 1.0, (5, 3), tol=2e-3, seed=4)
    for i in torch.randperm(32, generator=torch.Generator().manual_seed(0)).tolist():
        assert torch.equal(shuffled.increments(t[i:i + 2])[0][:, 0], dw[:, i])
    # a coarse grid is the sum of the fine one (up to rounding of the sums)
    coarse = BrownianTree(0.0, 1.0, (5, 3), tol=2e-3, seed=4).increments(t[::4])[0]
    torch.testing.assert_close(coarse, dw.reshape(5, 8, 4, 3).sum(2), rtol=0, atol=1e-13)


def test_rows_per_sequence_grids_and_seeds():
    bm = BrownianTree(0.0, 1.0, (4, 2), tol=1e-3, seed=5)
    grid = torch.tensor([[0.0, 0.2, 0.7], [0.1, 0.5, 0.9], [0.0, 0.3, 1.0], [0.4, 0.6, 0.8]],
                        dtype=F64)
    w = bm.value(grid)                                                        # (4, 3, 2)
    for b in range(4):
        alone = bm.rows([b]).value(grid[b])[0]
        shared = BrownianTree(0.0, 1.0, (4, 2), tol=1e-3, seed=5).value(grid[b])[b]
        assert torch.equal(alone, w[b]) and torch.equal(shared, w[b])
    assert not torch.equal(BrownianTree(0.0, 1.0, (4, 2), tol=1e-3, seed=6).value(grid), w)
    gen = torch.Generator().manual_seed(9)
    a = BrownianTree(0.0, 1.0, (4, 2), generator=gen).value(grid)
    b = BrownianTree(0.0, 1.0, (4, 2), generator=torch.Generator().manual_seed(9)).value(grid)
    assert torch.equal(a, b)
    assert bm(grid[:, 0], grid[:, 2]).shape == (4, 2)
    f32 = BrownianTree(0.0, 1.0, (4, 2), tol=1e-3, seed=5, dtype=torch.float32).value(grid)
    assert f32.dtype == torch.float32 and torch.equal(f32, w.float())


def test_memory_is_the_path_to_one_leaf():
    bm = BrownianTree(0.0, 100.0, (3, 2), tol=1e-6, seed=7)
    assert bm.depth == 27
    gen = torch.Generator().manual_seed(0)
    for _ in range(12):
        t = torch.sort(torch.rand(6, generator=gen, dtype=F64) * 100).values
        bm.increments(t)
        assert bm.cached_nodes <= bm.depth + 1


def test_bad_input():
    with pytest.raises(DataError, match="t0 < t1"):
        BrownianTree(1.0, 1.0, (2, 1))
    with pytest.raises(DataError, match="tol"):
        BrownianTree(0.0, 1.0, (2, 1), tol=0.0)
    bm = BrownianTree(0.0, 1.0, (2, 1), seed=0)
    with pytest.raises(DataError, match="lie in"):
        bm.increments(torch.tensor([0.0, 1.5], dtype=F64))
    with pytest.raises(DataError, match="non-decreasing"):
        bm.increments(torch.tensor([0.5, 0.2], dtype=F64))
