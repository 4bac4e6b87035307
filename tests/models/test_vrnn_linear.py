"""Independent oracle for the VRNN: with latents entering only through affine maps (see
tests/models/linear_vrnn.py) its exact log-likelihood is a sum of dense Gaussian terms.
With the exact posterior every importance weight equals it; with the learned encoder
the ELBO and the IWAE bounds lie below it and the IWAE grows with k (float64)."""

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.common import log_mean_exp
from tests.models.linear_vrnn import (
    conditionally_linear_vrnn,
    exact_log_likelihood,
    with_exact_posterior,
)

F64 = torch.float64


def make_batch(B, T, D, U=0, lengths=None, p_obs=0.7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=F64)
    mask = torch.rand(B, T, D, generator=g) < p_obs
    mask[:, 0] = True
    lengths = torch.full((B,), T) if lengths is None else torch.tensor(lengths)
    mask &= (torch.arange(T)[None] < lengths[:, None])[..., None]
    u = torch.randn(B, T, U, generator=g, dtype=F64) if U else None
    t = torch.arange(T, dtype=F64).expand(B, T)
    return SequenceBatch(torch.where(mask, x, torch.zeros_like(x)), mask, t, lengths, u)


CASES = [dict(D=3, Z=1, U=0), dict(D=2, Z=2, U=1, diagonal_emission=True)]


@pytest.mark.parametrize("case", CASES, ids=["D3-Z1", "D2-Z2-inputs"])
def test_exact_posterior_weights_equal_the_closed_form_log_likelihood(case):
    model = with_exact_posterior(conditionally_linear_vrnn(**case))
    batch = make_batch(4, 6, case["D"], case["U"], lengths=[6, 4, 5, 6])
    exact = exact_log_likelihood(model, batch)                                  # (B,)
    with torch.no_grad():
        s = model.steps(batch, 64)
    log_w = (s.log_lik + s.log_ratio).sum(-1)                                   # (K, B)
    torch.testing.assert_close(log_w, exact.expand(64, -1), rtol=0, atol=1e-9)
    torch.testing.assert_close(model.log_likelihood_bound(batch, 8), exact, rtol=0, atol=1e-9)
    # the closed-form-KL ELBO is unbiased for the same value
    with torch.no_grad():
        s = model.steps(batch, 4000)
    per_path = (s.log_lik - s.kl.sum(-1)).sum(-1)                              # kl: (K, B, T, Z)
    se = per_path.std(0) / 4000 ** 0.5
    assert bool(((per_path.mean(0) - exact).abs() < 4 * se + 1e-9).all())


def test_the_oracle_sees_the_recurrence():
    """x_{<t} reaches p(x_t) through h: changing an early value changes later terms."""
    model = conditionally_linear_vrnn(D=3, Z=1)
    batch = make_batch(1, 5, 3, p_obs=1.0)
    x = batch.x.clone()
    x[0, 0, 0] += 1.0
    moved = SequenceBatch(x, batch.mask, batch.t, batch.lengths)
    one_step = SequenceBatch(batch.x[:, :1], batch.mask[:, :1], batch.t[:, :1],
                             torch.tensor([1]))
    one_moved = SequenceBatch(x[:, :1], batch.mask[:, :1], batch.t[:, :1], torch.tensor([1]))
    later = exact_log_likelihood(model, moved) - exact_log_likelihood(model, one_moved)
    before = exact_log_likelihood(model, batch) - exact_log_likelihood(model, one_step)
    assert float((later - before).abs()) > 1e-3


def test_learned_encoder_bounds_lie_below_and_iwae_grows_with_k():
    model = conditionally_linear_vrnn(D=3, Z=1, seed=3)
    batch = make_batch(3, 5, 3, lengths=[5, 3, 4])
    exact = exact_log_likelihood(model, batch)
    with torch.no_grad():
        s = model.steps(batch, 1600)
    elbo = (s.log_lik - s.kl.sum(-1)).sum(-1)                                        # (K, B)
    assert bool((elbo.mean(0) + 4 * elbo.std(0) / 40 < exact).all())
    log_w = (s.log_lik + s.log_ratio).sum(-1)                                   # (1600, B)
    iwae = {k: log_mean_exp(log_w.reshape(k, -1, 3)) for k in (1, 4, 16, 64)}  # (1600/k, B)
    means = torch.stack([v.mean(0) for v in iwae.values()])                    # (4, B)
    se1 = log_w.std(0) / 40
    assert bool(((means[0] - elbo.mean(0)).abs() < 4 * (se1 + elbo.std(0) / 40)).all())
    assert bool((means[1:] >= means[:-1]).all())
    assert bool((means[-1] <= exact + 4 * iwae[64].std(0) / 5).all())
