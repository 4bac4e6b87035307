"""LGSSM fitting machinery: grouped E-step statistics against a step-by-step oracle,
Fisher-identity gradients against autograd, and the default fit on a boundary maximum."""

import pytest
import torch

from dynvae import SequenceBatch
from dynvae.data import Standardizer, synthetic_lgssm_dataset
from dynvae.models import lgssm_fit
from dynvae.models.lgssm import LGSSM, Config
from dynvae.models.lgssm_em import e_step
from dynvae.ssm import rts_smoother
from tests.models.test_lgssm import random_lgssm
from tests.reference.dense_em_statistics import dense_statistics


def ragged_batch(B=3, T=7, D=3, U=1, seed=0):
    """Padding, missing entries (some rows all missing, the first one too), inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, D, generator=g) > 0.4
    mask[:, 0] = False
    mask[:, 1, 0] = True
    mask[0, 3] = False
    lengths = torch.tensor([T, T - 2, T - 1])
    valid = torch.arange(T)[None] < lengths[:, None]
    mask &= valid[..., None]
    u = torch.randn(B, T, U, generator=g, dtype=torch.float64) * valid[..., None]
    t = torch.arange(T, dtype=torch.float64).expand(B, T).contiguous()
    return SequenceBatch(torch.where(mask, x, 0.0), mask, t, lengths, u)


@pytest.mark.parametrize("n_groups", [1, 3])
def test_grouped_statistics_equal_the_step_by_step_oracle(n_groups):
    model, batch = random_lgssm(2, 3, 1), ragged_batch()
    groups = torch.randint(0, n_groups, batch.lengths.shape + (batch.n_steps,),
                           generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ssm = model.ssm()
        stats = e_step(ssm, batch.x, batch.mask, batch.lengths, batch.u, rts_smoother,
                       None if n_groups == 1 else groups, n_groups)
        sm = rts_smoother(ssm, batch.x, batch.mask, batch.u)
        _, offset = ssm.offsets(batch.n_steps, batch.u)
        trans, counts, emis = dense_statistics(
            sm, batch.x, batch.mask, batch.lengths, batch.u, ssm.emission_matrix,
            ssm.emission_cov, offset.expand_as(batch.x), groups if n_groups > 1 else None,
            n_groups)
    torch.testing.assert_close(stats.transition, trans, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.n_transitions, counts)
    torch.testing.assert_close(stats.emission, emis, rtol=1e-12, atol=1e-12)
    assert int(counts.sum()) == int((batch.lengths - 1).sum())


@pytest.mark.parametrize("initial", ["learned", "diffuse"])
@pytest.mark.parametrize("diagonal", [False, True])
def test_fisher_gradient_equals_autograd_gradient(initial, diagonal):
    batch = ragged_batch()
    if initial == "learned":
        model = random_lgssm(2, 3, 1, diagonal=diagonal)
    else:
        model = LGSSM(Config(diagonal_cov=diagonal, transition="linear", transition_bias=True,
                             emission_bias=True, diffuse_kappa=100.0), 3, 1)
        model.initialize_from_data(batch)
    model.zero_grad()
    reference_value = model.log_likelihood(batch).sum()
    reference_value.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    value = lgssm_fit.fisher_objective(model, batch)
    value.backward()
    torch.testing.assert_close(value.detach(), reference_value.detach(), rtol=1e-12, atol=1e-9)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-9, atol=1e-10, msg=name)


def boundary_batch(n):
    data = synthetic_lgssm_dataset(n=n, T=50, S=3, D=6, missing=0.1, seed=0)
    return Standardizer().fit(data).transform(data).to_batch(dtype=torch.float64)


def fitted(batch, method="lbfgs", **kw):
    model = LGSSM(Config(**kw.pop("model", {})), 6)
    model.initialize_from_data(batch)
    lgssm_fit.fit_method(method)(model, batch, lgssm_fit.FitConfig(method=method, **kw), False)
    with torch.no_grad():
        return model, float(model.log_likelihood(batch).sum())


def test_default_fit_reaches_a_boundary_maximum_without_failing():
    """Six channels driven by three latent factors: the local level's Q has rank 3 at
    the maximum, so L-BFGS drives three log-Cholesky diagonals towards -inf (this
    failed with 'not positive definite' when Q was factorised again)."""
    batch = boundary_batch(3)
    model, ll = fitted(batch)
    _, ll_em = fitted(batch, "em", max_iter=50)
    eig = torch.linalg.eigvalsh(model.transition_cov().detach())
    assert ll >= ll_em
    assert eig[0] < 1e-4 * eig[-1]                 # the maximum is on the boundary


@pytest.mark.slow
def test_fisher_and_autograd_fits_reach_the_same_boundary_maximum():
    batch = boundary_batch(6)
    _, a = fitted(batch)
    _, b = fitted(batch, gradient="autograd", model={"inference": "parallel"})
    assert abs(a - b) / float(batch.mask.sum()) < 1e-5, (a, b)
