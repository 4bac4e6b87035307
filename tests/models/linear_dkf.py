"""Test support: a Deep Kalman Filter with affine networks that equals a given linear
Gaussian SSM (diagonal noise), and an encoder that is that SSM's exact posterior
p(z_t | z_{t-1}, x) computed by the RTS smoother of dynvae.ssm."""

from __future__ import annotations

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.nn.encoders import Encoder
from dynvae.nn.mlp import inverse_softplus
from dynvae.ssm import LinearGaussianSSM, rts_smoother


def random_ssm(S: int, D: int, U: int = 0, coupled: bool = True, seed: int = 0,
               dtype=torch.float64) -> LinearGaussianSSM:
    """Random stable SSM with diagonal Q, R, P0; ``coupled=False`` makes A and H diagonal
    (needs D == S), so that every exact posterior conditional is diagonal."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)
    pos = lambda n: 0.2 + torch.rand(n, generator=g, dtype=dtype)
    if coupled:
        A = 0.4 * rnd(S, S) + 0.5 * torch.eye(S, dtype=dtype)
        H = rnd(D, S)
    else:
        A = torch.diag(0.5 + 0.4 * torch.rand(S, generator=g, dtype=dtype))
        H = torch.diag(1.0 + rnd(S).abs())
    return LinearGaussianSSM(
        initial_mean=rnd(S), initial_cov=torch.diag(pos(S) + 0.5),
        transition_matrix=A, transition_cov=torch.diag(pos(S)),
        emission_matrix=H, emission_cov=torch.diag(pos(D)),
        transition_bias=0.3 * rnd(S), emission_bias=rnd(D),
        transition_input=rnd(S, U) if U else None, emission_input=rnd(D, U) if U else None)


def linear_dkf(ssm: LinearGaussianSSM, encoder: str = "backward", **config) -> DeepKalmanFilter:
    """A float64 DKF whose generative model is exactly ``ssm``."""
    S, D = ssm.state_dim, ssm.obs_dim
    U = 0 if ssm.transition_input is None else ssm.transition_input.shape[-1]
    cfg = DKFConfig(latent_dim=S, encoder=encoder, transition="mlp", initial_prior="learned",
                    transition_hidden=(), emission_hidden=(), free_transition_variance=True,
                    free_emission_variance=True, min_var=0.0, encoder_hidden=8, **config)
    model = DeepKalmanFilter(cfg, D, U).double()
    diag = lambda M: torch.diagonal(M)
    with torch.no_grad():
        for head, M, G, bias, cov in (
                (model.transition.head, ssm.transition_matrix, ssm.transition_input,
                 ssm.transition_bias, ssm.transition_cov),
                (model.observation.head, ssm.emission_matrix, ssm.emission_input,
                 ssm.emission_bias, ssm.emission_cov)):
            head.mean.weight.copy_(M if G is None else torch.cat([M, G], 1))
            head.mean.bias.copy_(bias)
            head.variance.raw.copy_(inverse_softplus(diag(cov)))
        model.initial_prior.mean.copy_(ssm.initial_mean)
        model.initial_prior.raw_var.copy_(inverse_softplus(diag(ssm.initial_cov)))
    return model


class ExactPosteriorEncoder(Encoder):
    """q(z_t | z_{t-1}, x) = p(z_t | z_{t-1}, x_{0:T-1}) = N(a_t + G_t z_{t-1}, Sigma_t) of a
    linear Gaussian SSM, from the smoothed pairwise marginals of one fixed batch:
    G_t = C_t P_{t-1}^{-1}, a_t = m_t - G_t m_{t-1}, Sigma_t = P_t - G_t C_t^T
    (C_t = Cov(z_t, z_{t-1} | x)). Sigma_t must be diagonal (q is a diagonal Gaussian)."""

    def __init__(self, ssm: LinearGaussianSSM, batch: SequenceBatch) -> None:
        S = ssm.state_dim
        super().__init__(0, S)
        sm = rts_smoother(ssm, batch.x, batch.mask, batch.u)
        m, P, C = sm.smoothed_mean, sm.smoothed_cov, sm.smoothed_cross_cov
        G = torch.zeros_like(P)
        G[:, 1:] = torch.linalg.solve(P[:, :-1], C[:, 1:].transpose(-1, -2)).transpose(-1, -2)
        a = m.clone()
        a[:, 1:] = m[:, 1:] - (G[:, 1:] @ m[:, :-1, :, None])[..., 0]
        Sigma = P - G @ C.transpose(-1, -2)
        off = Sigma - torch.diag_embed(torch.diagonal(Sigma, dim1=-2, dim2=-1))
        assert off.abs().max() < 1e-10, "the exact conditional is not diagonal"
        B, T = m.shape[:2]
        self.register_buffer("context", torch.cat(
            [a, G.reshape(B, T, S * S), torch.diagonal(Sigma, dim1=-2, dim2=-1)], -1))
        self.S = S

    def summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.context

    def step(self, context: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        S = self.S
        a, G, var = context[..., :S], context[..., S:S + S * S], context[..., S + S * S:]
        G = G.reshape(*G.shape[:-1], S, S).expand(*z_prev.shape[:-1], S, S)
        return a + (G @ z_prev[..., None])[..., 0], var
