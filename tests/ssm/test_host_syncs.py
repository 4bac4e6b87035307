"""The per-step Kalman loops check their factorisations on the device and raise once,
after the loop, naming the first failing step (no host sync per step on a GPU)."""

import pytest
import torch

from dynvae.ssm.kalman import kalman_filter, rts_smoother
from dynvae.ssm.model import LinearGaussianSSM


def _model(emission_cov, device="cpu"):
    kw = dict(dtype=torch.float64, device=device)
    return LinearGaussianSSM(
        transition_matrix=torch.tensor([[0.9, 0.1], [0.0, 0.8]], **kw),
        transition_cov=0.1 * torch.eye(2, **kw), emission_matrix=torch.eye(2, **kw)[:1],
        emission_cov=emission_cov.to(**kw), initial_mean=torch.zeros(2, **kw),
        initial_cov=torch.eye(2, **kw), time_varying={"emission_cov"})


def test_a_negative_innovation_variance_names_its_step():
    T = 12
    R = torch.full((T, 1, 1), 0.5, dtype=torch.float64)
    R[7] = -50.0                                    # S = H P H^T + R < 0 at step 7 only
    x = torch.randn(T, 1, dtype=torch.float64)
    with pytest.raises(torch.linalg.LinAlgError, match="kalman_filter: .* at step 7"):
        kalman_filter(_model(R), x)
    R[7] = 0.5
    assert torch.isfinite(kalman_filter(_model(R), x).log_likelihood).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_filter_and_smoother_loops_do_not_synchronise_per_step():
    """torch raises on any synchronising call inside the loop in sync-debug mode 'error';
    the one check after each loop is made outside that mode."""
    T = 64
    R = torch.full((T, 1, 1), 0.5, dtype=torch.float64)
    model = _model(R, "cuda")
    x = torch.randn(4, T, 1, dtype=torch.float64, device="cuda")
    mask = torch.ones_like(x, dtype=torch.bool)
    calls = []
    from dynvae.ssm import kalman

    original = kalman._FirstFailure.raise_if_any

    def checked(self, where, problem):
        torch.cuda.set_sync_debug_mode(0)
        calls.append(where)
        original(self, where, problem)
        torch.cuda.set_sync_debug_mode(2)

    kalman._FirstFailure.raise_if_any = checked
    try:
        torch.cuda.set_sync_debug_mode(2)
        result = rts_smoother(model, x, mask)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        kalman._FirstFailure.raise_if_any = original
    assert calls == ["kalman_filter", "rts_smoother"]
    assert torch.isfinite(result.smoothed_mean).all()
