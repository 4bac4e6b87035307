"""A small linear-Gaussian DVAE implementing the full model contract, for trainer tests.

Generative model: z_1 ~ N(0, 1), z_t = a * z_{t-1} + N(0, q), x_t = C z_t + N(0, r)
(diagonal a, q, r). Mean-field posterior q(z_t | x_t) = N(W x_t + b, v). With
``analytic=True`` the ELBO is computed in closed form (no sampling), otherwise by
the reparametrisation trick with the global torch RNG, like the neural models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.gaussian import diag_gaussian_log_prob, kl_diag_gaussians
from dynvae.models.base import DVAE, ELBOTerms, Prediction


class TinyLinearDVAE(DVAE):
    def __init__(self, data_dim: int, latent_dim: int = 2, analytic: bool = False) -> None:
        super().__init__()
        self.analytic = analytic
        self.C = nn.Parameter(0.5 * torch.randn(data_dim, latent_dim))
        self.W = nn.Parameter(0.5 * torch.randn(latent_dim, data_dim))
        self.b = nn.Parameter(torch.zeros(latent_dim))
        self.raw_a = nn.Parameter(torch.full((latent_dim,), 0.5))
        self.raw_q = nn.Parameter(torch.zeros(latent_dim))
        self.raw_r = nn.Parameter(torch.zeros(data_dim))
        self.raw_v = nn.Parameter(torch.full((latent_dim,), -1.0))

    # --------------------------------------------------------------- pieces
    def _params(self):
        return (torch.tanh(self.raw_a), F.softplus(self.raw_q) + 1e-3,
                F.softplus(self.raw_r) + 1e-3, F.softplus(self.raw_v) + 1e-4)

    def _posterior(self, batch: SequenceBatch) -> tuple[Tensor, Tensor]:
        a, q, r, v = self._params()
        m = (batch.x * batch.mask) @ self.W.T + self.b  # (B, T, Z)
        return m, v.expand_as(m)

    def _prior_moments(self, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        """Prior mean/var of z_t given z_{t-1} (B, T, Z); the first step is N(0, 1)."""
        a, q, _, _ = self._params()
        mean = torch.cat([torch.zeros_like(z_prev[:, :1]), a * z_prev[:, :-1]], dim=1)
        var = torch.cat([torch.ones_like(z_prev[:, :1]), q.expand_as(z_prev[:, 1:])], dim=1)
        return mean, var

    def _log_joint_minus_q(self, batch: SequenceBatch, z: Tensor, m: Tensor, v: Tensor
                           ) -> tuple[Tensor, Tensor]:
        """(log p(x|z) summed, log q(z) - log p(z) summed) per sequence for one sample z."""
        _, _, r, _ = self._params()
        valid = batch.valid[..., None]  # (B, T, 1)
        ll = diag_gaussian_log_prob(batch.x, z @ self.C.T, r, batch.mask).sum((1, 2))
        pm, pv = self._prior_moments(z)
        log_q = diag_gaussian_log_prob(z, m, v, valid.expand_as(z)).sum((1, 2))
        log_p = diag_gaussian_log_prob(z, pm, pv, valid.expand_as(z)).sum((1, 2))
        return ll, log_q - log_p

    # ------------------------------------------------------------- contract
    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        m, v = self._posterior(batch)
        n_obs = batch.mask.sum((1, 2)).to(m.dtype)
        if self.analytic:
            return ELBOTerms(*self._analytic_terms(batch, m, v), n_obs)
        lls, kls = [], []
        for _ in range(n_samples):
            z = m + v.sqrt() * torch.randn_like(m)
            ll, kl = self._log_joint_minus_q(batch, z, m, v)
            lls.append(ll)
            kls.append(kl)
        return ELBOTerms(torch.stack(lls).mean(0), torch.stack(kls).mean(0), n_obs)

    def _analytic_terms(self, batch, m, v):
        a, q, r, _ = self._params()
        valid = batch.valid[..., None].to(m.dtype)
        # E_q log N(x | C z, r) = log N(x | C m, r) - 0.5 diag(C V C^T) / r
        cvc = v @ (self.C.T ** 2)  # (B, T, D)
        ll = diag_gaussian_log_prob(batch.x, m @ self.C.T, r, batch.mask)
        ll = (ll - torch.where(batch.mask, 0.5 * cvc / r, torch.zeros_like(cvc))).sum((1, 2))
        pm, pv = self._prior_moments(m)
        kl = kl_diag_gaussians(m, v, pm, pv)
        # E_{q(z_{t-1})} of the Gaussian KL adds a^2 v_{t-1} / (2 q)
        extra = torch.cat([torch.zeros_like(v[:, :1]), 0.5 * a ** 2 * v[:, :-1] / q], dim=1)
        return ll, ((kl + extra) * valid).sum((1, 2))

    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        _, _, r, _ = self._params()
        m, v = self._posterior(batch)
        return Prediction(batch.t, m @ self.C.T, (v @ (self.C.T ** 2) + r).sqrt())

    def forecast(self, batch: SequenceBatch, t_future: Tensor) -> Prediction:
        a, q, r, _ = self._params()
        m, v = self._posterior(batch)
        last = (batch.lengths - 1)[:, None, None].expand(-1, 1, m.shape[-1])
        mean, var = m.gather(1, last)[:, 0], v.gather(1, last)[:, 0]  # (B, Z)
        means, stds = [], []
        for _ in range(t_future.shape[1]):
            mean, var = a * mean, a ** 2 * var + q
            means.append(mean @ self.C.T)
            stds.append((var @ (self.C.T ** 2) + r).sqrt())
        return Prediction(t_future, torch.stack(means, 1), torch.stack(stds, 1))

    def sample(self, n: int, t: Tensor) -> Tensor:
        a, q, r, _ = self._params()
        z = torch.randn(n, self.C.shape[1], dtype=self.C.dtype)
        xs = []
        for k in range(t.shape[0]):
            if k > 0:
                z = a * z + q.sqrt() * torch.randn_like(z)
            xs.append(z @ self.C.T + r.sqrt() * torch.randn(n, self.C.shape[0]))
        return torch.stack(xs, 1)

    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        m, v = self._posterior(batch)
        weights = []
        for _ in range(k):
            z = m + v.sqrt() * torch.randn_like(m)
            ll, kl = self._log_joint_minus_q(batch, z, m, v)
            weights.append(ll - kl)
        return torch.logsumexp(torch.stack(weights), 0) - math.log(k)


class RecordingDVAE(TinyLinearDVAE):
    """TinyLinearDVAE that keeps (padded steps, lengths) of every training batch in
    ``seen``: what the trainer fed it."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.seen: list[tuple[int, list[int]]] = []

    def elbo(self, batch, n_samples=1):
        if self.training:
            self.seen.append((batch.x.shape[1], batch.lengths.tolist()))
        return super().elbo(batch, n_samples)


class ListDataset:
    """The two methods the trainer needs from a SequenceDataset, over dense tensors."""

    def __init__(self, x: Tensor) -> None:
        self.x = x  # (N, T, D) with NaN = missing

    def __len__(self) -> int:
        return self.x.shape[0]

    def to_batch(self, indices, dtype=None, device=None) -> SequenceBatch:
        batch = SequenceBatch.from_tensor(self.x[list(indices)])
        return batch.to(device=device, dtype=dtype)


def make_data(n: int = 24, T: int = 12, D: int = 3, seed: int = 0) -> Tensor:
    """(n, T, D) sequences from a random linear-Gaussian model with ~10% missing."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.zeros(n, T, 2, dtype=torch.float64)
    for k in range(1, T):
        z[:, k] = 0.8 * z[:, k - 1] + 0.5 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    C = torch.randn(2, D, generator=gen, dtype=torch.float64)
    x = z @ C + 0.3 * torch.randn(n, T, D, generator=gen, dtype=torch.float64)
    hide = torch.rand(n, T, D, generator=gen) < 0.1
    hide[:, 0, 0] = False
    return x.masked_fill(hide, float("nan"))
