"""Brownian motion: variance of increments, consistency across nested grids and query
orders, space-time Levy area, seeding, bad input."""

import math

import pytest
import torch

from dynvae.errors import DataError
from dynvae.sde import BrownianPath, brownian_increments

F64 = torch.float64
N_PATHS = 20000


def _assert_unit_chi2(x: torch.Tensor, k: float = 5.0):
    """Each column of x (n, m) should be N(0, 1): mean of squares within k SE of 1."""
    n = x.shape[0]
    ms = (x ** 2).mean(0)
    assert ((ms - 1).abs() < k * math.sqrt(2 / n)).all(), ms


def test_increments_have_variance_dt_on_irregular_per_sequence_grids():
    gen = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(N_PATHS, 6, generator=gen, dtype=F64), -1).values
    dw = brownian_increments(t, (N_PATHS, 1), generator=gen)[..., 0]  # (n, 5)
    _assert_unit_chi2(dw / torch.diff(t).sqrt())


def test_path_increments_variance_levy_area_and_independence():
    bm = BrownianPath(0.0, 2.0, (N_PATHS, 2), seed=1)
    t = torch.tensor([0.0, 0.3, 0.35, 1.0, 2.0], dtype=F64)
    dw, area = bm.increments(t)  # (n, 4, 2)
    h = torch.diff(t).unsqueeze(-1)
    _assert_unit_chi2((dw / h.sqrt()).reshape(N_PATHS, -1))
    _assert_unit_chi2((area / (h / 12).sqrt()).reshape(N_PATHS, -1))
    corr = (dw / h.sqrt() * area / (h / 12).sqrt()).mean(0)  # independent -> ~0
    assert (corr.abs() < 5 / math.sqrt(N_PATHS)).all()


@pytest.mark.parametrize("coarse_first", [True, False])
def test_nested_grids_are_consistent(coarse_first):
    bm = BrownianPath(0.0, 1.0, (64, 3), seed=2)
    coarse = torch.linspace(0, 1, 5, dtype=F64)
    fine = torch.linspace(0, 1, 17, dtype=F64)
    first = bm.increments(coarse if coarse_first else fine)
    second = bm.increments(fine if coarse_first else coarse)
    (dwc, hc), (dwf, hf) = (first, second) if coarse_first else (second, first)
    torch.testing.assert_close(dwc, dwf.reshape(64, 4, 4, 3).sum(2), rtol=0, atol=1e-13)
    # Space-time area of a coarse step from its four fine pieces:
    # int (W - W(s)) = sum_i [h_i (W(s_i) - W(s)) + h_i (H_i + dW_i / 2)].
    h = 1 / 16
    dwf4, hf4 = dwf.reshape(64, 4, 4, 3), hf.reshape(64, 4, 4, 3)
    w_before = torch.cumsum(dwf4, 2) - dwf4
    integral = (h * w_before + h * (hf4 + 0.5 * dwf4)).sum(2)
    torch.testing.assert_close(hc, integral / 0.25 - 0.5 * dwc, rtol=0, atol=1e-12)
    # Asking again returns the same numbers.
    torch.testing.assert_close(bm.increments(coarse)[0], dwc, rtol=0, atol=1e-14)


def test_value_and_call_agree_and_per_sequence_queries_refine_one_path():
    bm = BrownianPath(0.0, 1.0, (3, 2), seed=3)
    grid = torch.tensor([[0.0, 0.2, 0.7], [0.0, 0.5, 0.9], [0.0, 0.1, 1.0]], dtype=F64)
    w = bm.value(grid)  # (3, 3, 2)
    torch.testing.assert_close(bm(grid[:, 1], grid[:, 2]), w[:, 2] - w[:, 1], rtol=0,
                               atol=1e-14)
    # A shared-grid query after per-sequence ones stays consistent with them.
    shared = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=F64)
    ws = bm.value(shared)
    torch.testing.assert_close(ws[0, 1], w[0, 1], rtol=0, atol=1e-14)
    torch.testing.assert_close(ws[1, 2], w[1, 1], rtol=0, atol=1e-14)
    torch.testing.assert_close(ws[2, 3], w[2, 2], rtol=0, atol=1e-14)


def test_seeded_paths_are_reproducible_and_rows_share_values():
    t = torch.linspace(0, 1, 9, dtype=F64)
    a = BrownianPath(0, 1, (4, 2), seed=7).increments(t)[0]
    bm = BrownianPath(0, 1, (4, 2), seed=7)
    torch.testing.assert_close(bm.increments(t)[0], a, rtol=0, atol=0)
    assert not torch.equal(BrownianPath(0, 1, (4, 2), seed=8).increments(t)[0], a)
    torch.testing.assert_close(bm.rows([2]).increments(t)[0], a[2:3], rtol=0, atol=0)


def test_bad_queries_raise_clear_errors():
    bm = BrownianPath(0, 1, (2, 1), seed=0)
    with pytest.raises(DataError, match="lie in"):
        bm.increments(torch.tensor([0.0, 1.5], dtype=F64))
    with pytest.raises(DataError, match="non-decreasing"):
        bm.increments(torch.tensor([0.5, 0.2], dtype=F64))
    with pytest.raises(DataError, match="do not match"):
        bm.increments(torch.zeros(3, 4, dtype=F64))
    with pytest.raises(DataError, match="t0 < t1"):
        BrownianPath(1, 1, (2, 1))


def _assert_brownian_law(t: torch.Tensor, dw: torch.Tensor, area: torch.Tensor):
    """Increments N(0, h), areas N(0, h/12), every pair of them uncorrelated.

    t: (n, N) or (N,) grid; dw, area: (n, N-1) for one noise channel."""
    h = torch.diff(t, dim=-1).expand_as(dw)
    z = torch.cat([dw / h.sqrt(), area / (h / 12).sqrt()], dim=1)  # (n, 2(N-1))
    _assert_unit_chi2(z)
    corr = (z.T @ z) / z.shape[0]
    off = corr - torch.diag(torch.diagonal(corr))
    assert off.abs().max() < 5 / math.sqrt(z.shape[0]), off.abs().max()


def test_single_time_queries_in_random_order_give_the_brownian_law():
    # Each query inserts one knot somewhere in the middle: pieces are kept, moved and
    # split in every pattern, and the stored capacity grows several times.
    gen = torch.Generator().manual_seed(11)
    times = torch.rand(15, generator=gen, dtype=F64) * 2.0
    bm = BrownianPath(0.0, 2.0, (N_PATHS, 1), seed=12)
    for k in torch.randperm(15, generator=gen).tolist():
        bm.value(times[k:k + 1])
    grid = torch.cat([torch.tensor([0.0], dtype=F64), times.sort().values,
                      torch.tensor([2.0], dtype=F64)])
    dw, area = bm.increments(grid)
    _assert_brownian_law(grid, dw[..., 0], area[..., 0])


def test_per_sequence_single_time_queries_give_the_brownian_law():
    gen = torch.Generator().manual_seed(13)
    times = torch.rand(N_PATHS, 6, generator=gen, dtype=F64)
    bm = BrownianPath(0.0, 1.0, (N_PATHS, 1), seed=14)
    bm.value(torch.tensor([0.5], dtype=F64))  # one shared knot first, then per sequence
    for k in (3, 0, 5, 1, 4, 2):
        bm.value(times[:, k:k + 1])
    ends = torch.tensor([[0.0, 0.5, 1.0]], dtype=F64).expand(N_PATHS, -1)
    grid = torch.cat([times, ends], dim=1).sort(dim=1).values
    dw, area = bm.increments(grid)
    _assert_brownian_law(grid, dw[..., 0], area[..., 0])


def test_forward_block_queries_keep_earlier_pieces_exactly():
    # The solver's pattern: consecutive blocks of a step grid, forward in time. Pieces
    # a later query does not split are never recomputed: every earlier answer is
    # returned again bit for bit, and the blocks add up to the whole grid's increments.
    bm = BrownianPath(0.0, 1.0, (32, 3), seed=15)
    grid = torch.linspace(0, 1, 41, dtype=F64)
    blocks = [bm.increments(grid[s:s + 5]) for s in range(0, 40, 4)]
    for s, (dw, area) in zip(range(0, 40, 4), blocks, strict=True):
        again = bm.increments(grid[s:s + 5])
        assert torch.equal(again[0], dw) and torch.equal(again[1], area)
    dw_all, area_all = bm.increments(grid)
    torch.testing.assert_close(dw_all, torch.cat([b[0] for b in blocks], 1), rtol=0,
                               atol=1e-14)
    torch.testing.assert_close(area_all, torch.cat([b[1] for b in blocks], 1), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(bm.value(grid[-1:])[:, 0], dw_all.sum(1), rtol=0, atol=1e-13)


def test_a_query_splitting_many_scattered_pieces_keeps_the_others_exactly():
    # New knots in every other piece of a 200-piece path: the kept pieces form ~100
    # separate runs (the index-copy branch rather than slice copies).
    bm = BrownianPath(0.0, 1.0, (16, 2), seed=16)
    coarse = torch.linspace(0, 1, 201, dtype=F64)
    dw_c, area_c = bm.increments(coarse)
    mids = 0.5 * (coarse[:-1] + coarse[1:])[::2]                 # 100 new knots
    fine = torch.cat([coarse, mids]).sort().values
    dw_f, area_f = bm.increments(fine)
    again_c = bm.increments(coarse)
    torch.testing.assert_close(again_c[0], dw_c, rtol=0, atol=1e-14)
    torch.testing.assert_close(again_c[1], area_c, rtol=0, atol=1e-12)
    # the pieces no knot fell in (every second one) are the coarse pieces themselves,
    # the split ones add up to theirs (a misplaced copy would be off by O(sqrt(h)))
    odd, even = torch.arange(1, 200, 2), torch.arange(0, 200, 2)
    kept = [int(torch.searchsorted(fine, coarse[k])) for k in odd.tolist()]
    torch.testing.assert_close(dw_f[:, kept], dw_c[:, odd], rtol=0, atol=1e-13)
    torch.testing.assert_close(area_f[:, kept], area_c[:, odd], rtol=0, atol=1e-12)
    first = [int(torch.searchsorted(fine, coarse[k])) for k in even.tolist()]
    halves = dw_f[:, first] + dw_f[:, [i + 1 for i in first]]
    torch.testing.assert_close(halves, dw_c[:, even], rtol=0, atol=1e-13)
