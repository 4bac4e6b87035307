"""Test support: a VRNN whose latents enter only through affine maps, so that its exact
log-likelihood has a closed form, and an encoder head that is its exact posterior.

Configuration (float64, no hidden layers, min_var = 0, free emission variance):
    phi_x = identity              the GRU reads the features [x_t, m_t, u_t] as they are, an
                                  unseen entry holding its last seen value (0 before it)
    phi_z = affine, z -> L z + l  so the decoder mean is affine in z_t
    GRU weights on phi_z = 0      z_t does not enter the recurrence
Then h_{t-1} is a deterministic function of the observed x_{<t}, z_t ~ N(a_t, diag v_t)
with (a_t, v_t) from the prior head at h_{t-1}, and x_t | z_t ~ N(C z_t + g_t, R) with C,
g_t, R read off the decoder. Each step is a linear-Gaussian model, so

    log p(x) = sum_t log N(x_t,obs | C_obs a_t + g_t,obs, C_obs diag(v_t) C_obs^T + R_obs)

in closed form (dense Gaussians, torch.distributions), and the exact posterior of z_t is
p(z_t | x_t,obs, h_{t-1}), the same for every sample: IWAE weights equal log p(x).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal
from torch.nn.functional import softplus

from dynvae.data.batch import SequenceBatch
from dynvae.models.vrnn import VRNN, VRNNConfig

F64 = torch.float64


def conditionally_linear_vrnn(D: int, Z: int, U: int = 0, hidden: int = 5,
                              diagonal_emission: bool = False, seed: int = 0,
                              **config) -> VRNN:
    """The VRNN of the module docstring with random weights. ``diagonal_emission`` makes
    C diagonal (needs D == Z) so that every exact posterior is a diagonal Gaussian."""
    torch.manual_seed(seed)
    F = 2 * D + U
    cfg = VRNNConfig(latent_dim=Z, hidden_size=hidden, feature_size=F, mlp_hidden=(),
                     free_emission_variance=True, min_var=0.0,
                     **{"encoder": "filtering", **config})   # the exact posterior below is causal
    model = VRNN(cfg, D, U)
    model.phi_x = nn.Identity()
    model.phi_z = nn.Linear(Z, F)
    model = model.double()
    with torch.no_grad():
        model.rnn.weight_ih[:, F:].zero_()                      # z_t leaves h untouched
        model.observation.head.variance.raw.copy_(torch.linspace(-1.0, 0.5, D))
        if diagonal_emission:
            emission = model.observation.head.mean.weight       # (D, H + F + U)
            emission[:, hidden:hidden + F] = 0.0
            emission[:, hidden:hidden + Z] = torch.eye(D, dtype=F64)
            model.phi_z.weight.zero_()
            model.phi_z.weight[:Z] = torch.diag(torch.linspace(0.8, 1.6, Z, dtype=F64))
    return model


def step_moments(model: VRNN, h: Tensor, u: Tensor | None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """From the weights: prior mean a (N, Z) and variance v (N, Z) of z_t, emission matrix
    C (D, Z), offset g (N, D) and noise variance r (D,) of x_t | z_t."""
    H, F = model.config.hidden_size, model.config.feature_size
    hu = h if u is None else torch.cat([h, u], -1)
    prior = model.prior_head
    a = hu @ prior.mean.weight.T + prior.mean.bias
    v = softplus(hu @ prior.variance.weight.T + prior.variance.bias)
    W, b = model.observation.head.mean.weight, model.observation.head.mean.bias
    Wh, Wf, Wu = W[:, :H], W[:, H:H + F], W[:, H + F:]
    C = Wf @ model.phi_z.weight                                   # (D, Z)
    g = h @ Wh.T + Wf @ model.phi_z.bias + b
    if u is not None:
        g = g + u @ Wu.T
    r = softplus(model.observation.head.variance.raw)
    return a, v, C, g, r


@torch.no_grad()
def exact_log_likelihood(model: VRNN, batch: SequenceBatch) -> Tensor:
    """(B,) log p(x_observed): the GRU run over each sequence's features, then one dense
    Gaussian per step (no code of VRNN.steps is used)."""
    out = []
    for b in range(batch.batch_size):
        h = torch.zeros(1, model.config.hidden_size, dtype=F64)
        total = torch.zeros((), dtype=F64)
        carried = torch.zeros(model.data_dim, dtype=F64)      # each entry's last seen value
        for t in range(int(batch.lengths[b])):
            x, m = batch.x[b, t], batch.mask[b, t]
            u = None if batch.u is None else batch.u[b, t][None]
            a, v, C, g, r = step_moments(model, h, u)
            if bool(m.any()):
                mean = C @ a[0] + g[0]
                cov = C @ torch.diag(v[0]) @ C.T + torch.diag(r)
                total = total + MultivariateNormal(mean[m], cov[m][:, m]).log_prob(x[m])
            carried = torch.where(m, x, carried)
            feats = torch.cat([carried, m.to(F64)]
                              + ([] if u is None else [u[0]]))
            zeros = torch.zeros(model.config.feature_size, dtype=F64)
            h = model.rnn(torch.cat([feats, zeros])[None], h)
        out.append(total)
    return torch.stack(out)


class ExactPosteriorHead(nn.Module):
    """Replaces the encoder head: input [h_{t-1}, phi_x(features_t)] (N, H + F) ->
    mean, variance (N, Z) of p(z_t | x_t,obs, h_{t-1}) (Gaussian conditioning; the
    posterior covariance must be diagonal)."""

    def __init__(self, model: VRNN) -> None:
        super().__init__()
        self.model = [model]                    # not a submodule: no parameters of its own

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        model = self.model[0]
        H, D, U = model.config.hidden_size, model.data_dim, model.input_dim
        h, x = inputs[:, :H], inputs[:, H:H + D]
        m = inputs[:, H + D:H + 2 * D].to(F64)                        # (N, D) 0/1
        u = inputs[:, H + 2 * D:] if U else None
        a, v, C, g, r = step_moments(model, h, u)
        # precision diag(1/v) + C^T diag(m / r) C, information a / v + C^T (m (x - g) / r)
        precision = torch.diag_embed(1 / v) + C.T @ torch.diag_embed(m / r) @ C
        cov = torch.linalg.inv(precision)
        off = cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
        assert float(off.abs().max()) < 1e-12, "the exact posterior is not diagonal"
        info = a / v + (m * (x - g) / r) @ C
        mean = (cov @ info[..., None])[..., 0]
        return mean, torch.diagonal(cov, dim1=-2, dim2=-1)


def with_exact_posterior(model: VRNN) -> VRNN:
    """The same model with its encoder replaced by the exact posterior."""
    model.encoder_trunk = nn.Identity()
    model.encoder_head = ExactPosteriorHead(model)
    return model
