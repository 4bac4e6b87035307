"""On a GPU, the per-step loops of the sequential Kalman filter and RTS smoother never
wait for the device: their checks (dynvae.ssm.guard) and the smoother's gains run once,
outside the loops. Run with ``python -m pytest -m gpu`` on a machine with CUDA."""

import pytest
import torch

from dynvae.ssm import kalman
from dynvae.ssm.model import LinearGaussianSSM


def _model(T: int, device: str) -> LinearGaussianSSM:
    kw = dict(dtype=torch.float64, device=device)
    return LinearGaussianSSM(
        transition_matrix=torch.tensor([[0.9, 0.1], [0.0, 0.8]], **kw),
        transition_cov=0.1 * torch.eye(2, **kw), emission_matrix=torch.eye(2, **kw)[:1],
        emission_cov=torch.full((T, 1, 1), 0.5, **kw), initial_mean=torch.zeros(2, **kw),
        initial_cov=torch.eye(2, **kw), time_varying={"emission_cov"})


def _outside_sync_check(function):
    """``function`` run with synchronisation allowed (the once-per-call parts)."""
    def run(*args, **kwargs):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return function(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(2)
    return run


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_filter_and_smoother_loops_do_not_synchronise_per_step(monkeypatch):
    """In sync-debug mode 2 ('error') torch raises on any synchronising call; only the
    guard's checks and the vectorised smoother gains (one sync each) are exempted."""
    T = 64
    for name in ("check_filter", "check_smoother", "smoother_gain", "check_inputs"):
        monkeypatch.setattr(kalman, name, _outside_sync_check(getattr(kalman, name)))
    model = _model(T, "cuda")
    x = torch.randn(4, T, 1, dtype=torch.float64, device="cuda")
    mask = torch.rand(4, T, 1, device="cuda") > 0.2
    try:
        torch.cuda.set_sync_debug_mode(2)
        result = kalman.rts_smoother(model, x, mask)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    cpu = kalman.rts_smoother(model.to(device="cpu"), x.cpu(), mask.cpu())
    torch.testing.assert_close(result.smoothed_mean.cpu(), cpu.smoothed_mean, rtol=1e-10,
                               atol=1e-12)
