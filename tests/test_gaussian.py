"""The shared PSD factorisation: exact Cholesky where possible, minimal jitter where a
covariance is singular, finite gradients, and a clear error for a non-PSD matrix."""

import pytest
import torch

from dynvae.gaussian import psd_sqrt

F64 = torch.float64


def test_definite_matrices_get_their_exact_cholesky_factor_even_next_to_singular_ones():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(4, 4, generator=g, dtype=F64)
    definite = M @ M.T + 0.1 * torch.eye(4, dtype=F64)
    singular = torch.outer(M[0], M[0])                                   # rank 1
    L = psd_sqrt(torch.stack([definite, singular]))
    assert torch.equal(L[0], torch.linalg.cholesky(definite))
    assert torch.equal(L, torch.tril(L)) and bool(torch.isfinite(L).all())
    scale = float(torch.diagonal(singular).mean())
    torch.testing.assert_close(L[1] @ L[1].T, singular, rtol=0, atol=1e-12 * scale)


def test_zero_and_rotation_noise_factor_and_differentiate():
    # a periodic kernel's transition noise is exactly 0; FFBS conditionals can be singular
    L = psd_sqrt(torch.zeros(2, 2, dtype=F64))
    assert bool(torch.isfinite(L).all()) and float((L @ L.T).abs().max()) < 1e-300
    v = torch.tensor([1.0, 2.0], dtype=F64)
    Q = torch.outer(v, v).requires_grad_()
    (psd_sqrt(Q) @ torch.ones(2, dtype=F64)).sum().backward()
    assert Q.grad is not None and bool(torch.isfinite(Q.grad).all())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_matrix_that_is_not_psd_raises(dtype):
    P = torch.diag(torch.tensor([1.0, -1.0], dtype=dtype))
    with pytest.raises(torch.linalg.LinAlgError, match="not positive semi-definite"):
        psd_sqrt(P)


def test_sampling_factor_projects_a_slightly_indefinite_covariance_onto_the_psd_cone():
    """A float32 smoothed covariance may come out with an eigenvalue a little below 0
    (beyond psd_sqrt's jitter); draws then use its nearest PSD matrix (KVAE on chorales
    stopped with LinAlgError before)."""
    from dynvae.gaussian import sampling_factor
    g = torch.Generator().manual_seed(1)
    V, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    lam = torch.tensor([2.0, 1e-3, -1e-3], dtype=F64)
    P = (V * lam) @ V.T
    with pytest.raises(torch.linalg.LinAlgError):
        psd_sqrt(P)
    L = sampling_factor(torch.stack([P, torch.eye(3, dtype=F64)]))
    nearest = (V * lam.clamp_min(0)) @ V.T
    torch.testing.assert_close(L[0] @ L[0].T, nearest, rtol=0, atol=1e-12)
    assert torch.equal(L[1], torch.eye(3, dtype=F64))       # a PD matrix: its Cholesky
    with pytest.raises(torch.linalg.LinAlgError):
        sampling_factor(torch.full((2, 2), float("nan"), dtype=F64))
