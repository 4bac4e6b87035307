"""Test support for the path models (STORN, SRNN, RVAE, DSAE): small configurations of
every variant and the checks against the dense linear-Gaussian oracle."""

from __future__ import annotations

import numpy as np
import torch

from dynvae.models.common import log_mean_exp
from dynvae.models.registry import model_class
from tests.reference.dense_dvae import (
    Affine,
    expected_log_density,
    gaussian_entropy,
    log_density,
)

# variant -> (registry name, small configuration)
VARIANTS = {
    "storn": ("storn", dict(latent_dim=3, hidden_size=6, encoder_hidden=5, mlp_hidden=(6,))),
    "srnn": ("srnn", dict(latent_dim=3, hidden_size=6, encoder_hidden=5, mlp_hidden=(6,))),
    "rvae-non-causal": ("rvae", dict(latent_dim=3, hidden_size=6, encoder_hidden=5,
                                     mlp_hidden=(6,), encoder="non-causal")),
    "rvae-causal": ("rvae", dict(latent_dim=3, hidden_size=6, encoder_hidden=5,
                                 mlp_hidden=(6,), encoder="causal")),
    "dsae": ("dsae", dict(latent_dim=3, static_dim=2, hidden_size=6, encoder_hidden=5,
                          mlp_hidden=(6,))),
}


def build(variant: str, dtype=torch.float64, D: int = 2, U: int = 0, **overrides):
    """A small model of ``variant`` with ``overrides`` of its configuration."""
    name, config = VARIANTS[variant]
    cls = model_class(name)
    config = {"n_predict_samples": 4, **config, **overrides}
    return cls.from_config(cls.Config(**config), D, U).to(dtype)


@torch.no_grad()
def check_dense_oracle(model, batch, dense, latents, n_paths: int = 1920) -> None:
    """Compare a linear-Gaussian model with its dense oracle on every sequence.

    dense(model, batch, b) -> (p_y, q, x_obs): p_y the Affine of [x_obs; latents] under
    the generative model, q the Affine of the latents under q(· | x), x_obs the observed
    values. latents(paths, b) -> (K, n) the drawn latents of sequence b, in q's order.
    Checks, per path, log p(x, z) - log q(z | x) and log p(x | z) to 1e-9; the exact
    log p(x) above the ELBO and the IWAE bounds, which grow with k; and the model's ELBO
    (closed-form KL) against the closed-form dense ELBO within Monte Carlo error.
    """
    paths = model.path_terms(batch, n_paths)
    for b in range(batch.batch_size):
        p_y, q, x_obs = dense(model, batch, b)
        lat = latents(paths, b)                                               # (K, n)
        n_x = x_obs.shape[0]
        keep_x = torch.arange(p_y.mean.shape[0]) < n_x
        values = torch.cat([x_obs.expand(lat.shape[0], -1), lat], 1)
        log_joint = log_density(p_y, values)
        log_q = log_density(q, lat)
        log_prior = log_density(p_y.select(~keep_x), lat)
        torch.testing.assert_close(paths.log_lik[:, b] + paths.log_ratio[:, b],
                                   log_joint - log_q, rtol=0, atol=1e-9)
        torch.testing.assert_close(paths.log_lik[:, b], log_joint - log_prior, rtol=0,
                                   atol=1e-9)
        exact = log_density(p_y.select(keep_x), x_obs[None])[0]
        q_mean, q_cov = q.moments()
        value_cov = torch.block_diag(torch.zeros(n_x, n_x, dtype=q_cov.dtype), q_cov)
        dense_elbo = expected_log_density(p_y, torch.cat([x_obs, q_mean]), value_cov) + \
            gaussian_entropy(q_cov)
        elbo = paths.log_lik[:, b] - paths.kl[:, b]
        se = elbo.std() / n_paths ** 0.5
        assert abs(float(elbo.mean() - dense_elbo)) < 4 * float(se) + 1e-9, (b, elbo.mean(),
                                                                            dense_elbo)
        assert float(dense_elbo) < float(exact)
        log_w = paths.log_lik[:, b] + paths.log_ratio[:, b]
        iwae = [log_mean_exp(log_w.reshape(k, -1)) for k in (1, 4, 16, 64)]   # (K/k,)
        means = torch.stack([v.mean() for v in iwae])
        assert (means[1:] > means[:-1]).all(), (b, means)
        assert means[-1] < exact + 4 * iwae[-1].std() / len(iwae[-1]) ** 0.5, (b, means, exact)


def constant_features(batch, b: int, N: int, fill: str = "zero") -> list[Affine]:
    """[x_t, mask_t, u_t] of sequence b's valid steps, as constants, an unseen entry of x
    holding (``fill``) 0, its last seen value ("carry", 0 before the first) or the linear
    interpolation in step index between its nearest seen values ("steps": the nearest
    one at either end, 0 if never seen; numpy's interp)."""
    L = int(batch.lengths[b])
    x, m = batch.x[b, :L].clone(), batch.mask[b, :L]
    for d in range(x.shape[1]):
        seen = np.flatnonzero(m[:, d].numpy())
        if fill == "zero" or seen.size == 0:
            x[:, d] = torch.where(m[:, d], x[:, d], 0.0)
        elif fill == "carry":
            last = np.maximum.accumulate(np.where(m[:, d].numpy(), np.arange(L), -1))
            values = x[:, d].numpy()[np.maximum(last, 0)]
            x[:, d] = torch.as_tensor(np.where(last >= 0, values, 0.0), dtype=x.dtype)
        else:
            x[:, d] = torch.as_tensor(np.interp(np.arange(L), seen, x[seen, d].numpy()),
                                      dtype=x.dtype)
    parts = [x, m.to(x.dtype)] + ([] if batch.u is None else [batch.u[b, :L]])
    f = torch.cat(parts, -1)
    return [Affine.constant(f[t], N) for t in range(L)]
