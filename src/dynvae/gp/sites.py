"""Independent GP channels conditioned on Gaussian pseudo-observations ("sites").

The GP-VAE posterior family (Fortuin et al. 2020; Pearce 2020): latent channel
z_c of each sequence is an independent GP with a state-space kernel (state s_c, z_c = H s_c)
over the sequence's own times, and

    q(s) = p(s) prod_t N(y~_t | H s_t, v~_t) / p(y~),

a linear-Gaussian model whose "observations" are the sites (y~_t, v~_t). Everything is
then exact and O(T) by the Kalman filter and RTS smoother (dynvae.ssm):

    log p(y~)   the filter's marginal likelihood of the sites,
    KL(q || p)  = E_q[sum_t log N(y~_t | z_t, v~_t)] - log p(y~)   (the expectation from
                  the smoothed marginals, in closed form),
    log p(s) - log q(s) = log p(y~) - sum_t log N(y~_t | z_t, v~_t)  at any path s,

and draws s ~ q come from forward-filter backward-sample. All functions are pure; the
channels of a batch run as one LGSSM batch of shape (B, Z) with a time-varying transition.
Shapes: B batch, T time, Z channels, S kernel state dim, K samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from dynvae.errors import ConfigError, DataError
from dynvae.gaussian import LOG_2PI
from dynvae.gp.discretize import discretize
from dynvae.gp.inference import KalmanEngine
from dynvae.gp.kernels.base import Kernel
from dynvae.ssm import LinearGaussianSSM, SmootherResult
from dynvae.ssm.scalar import scalar_ffbs_sample


class Sites(NamedTuple):
    """Gaussian pseudo-observations N(mean | z_t, var) of every channel.

    mean: (B, T, Z).  var: (B, T, Z), > 0.  mask: (B, T) bool, True where a step carries a
    site (steps without one, e.g. padding, are pure predictions).
    """

    mean: Tensor
    var: Tensor
    mask: Tensor


class SitePosterior(NamedTuple):
    """q(s) of :func:`site_posterior`.

    log_marginal: (B,) log p(y~), summed over channels.
    mean, var: (B, T, Z) smoothed marginals of z_t = H s_t.
    smoothed: the per-channel smoother output, batch (B, Z), states (B, Z, T, S).
    model: the per-channel LGSSM the sites were filtered with.
    """

    log_marginal: Tensor
    mean: Tensor
    var: Tensor
    smoothed: SmootherResult
    model: LinearGaussianSSM


def check_kernels(kernels: Sequence[Kernel]) -> int:
    """Raise ConfigError unless ``kernels`` are Kernel objects sharing one state dim; return S."""
    if not kernels or not all(isinstance(k, Kernel) for k in kernels):
        raise ConfigError("the GP channels need a non-empty list of dynvae.gp.kernels.Kernel "
                          f"objects, got {[type(k).__name__ for k in kernels]}")
    dims = {k.state_dim for k in kernels}
    if len(dims) != 1:
        raise ConfigError(f"every channel kernel must have the same state dim, got {dims}")
    return dims.pop()


def step_lengths(t: Tensor, steps: Tensor) -> Tensor:
    """(B, T) transition lengths dt_k = t_k - t_{k-1} on the steps of each grid.

    Args: t (B, T) times, strictly increasing where ``steps`` (B, T) bool is True (a prefix
    of each row). Entry 0 is unused (the start is stationary). Beyond a row's grid, where
    t may hold anything, dt is the batch's largest step: a finite positive step whose
    pure prediction touches no site. (Its transition noise Q = Pinf - A Pinf A^T may
    still be singular, e.g. exactly 0 for a periodic kernel, whose state rotates.)
    """
    dt = torch.diff(t, dim=-1, prepend=t[:, :1])                        # (B, T)
    inside = steps & torch.roll(steps, 1, -1)
    inside[:, 0] = False
    fill = dt[inside].max() if bool(inside.any()) else torch.ones((), dtype=t.dtype,
                                                                  device=t.device)
    return torch.where(inside, dt, fill)


class _Discretised(nn.Module):
    """A kernel's discretisation as a module call, for torch.func.functional_call."""

    def __init__(self, kernel: Kernel) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, dt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        A, Q = discretize(self.kernel, dt)
        ss = self.kernel.state_space()
        return A, Q, ss.Pinf, ss.H


def _same_structure(kernels: Sequence[Kernel]) -> bool:
    first = kernels[0]
    names = [n for n, _ in first.named_parameters()] + [n for n, _ in first.named_buffers()]
    return type(first).batchable and all(
        type(k) is type(first)
        and [n for n, _ in k.named_parameters()] + [n for n, _ in k.named_buffers()] == names
        for k in kernels)


def channel_matrices(kernels: Sequence[Kernel], dt: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A (*b, Z, S, S), Q (*b, Z, S, S) for steps dt (*b,) and Pinf (Z, S, S), H (Z, 1, S)
    of Z channel kernels: at once by torch.func.vmap over their stacked hyperparameters
    when the kernels are copies of one ``batchable`` kernel, one by one otherwise."""
    if len(kernels) > 1 and _same_structure(kernels):
        state = [dict(list(k.named_parameters()) + list(k.named_buffers())) for k in kernels]
        stacked = {f"kernel.{n}": torch.stack([s[n] for s in state]) for n in state[0]}
        call = lambda p: functional_call(_Discretised(kernels[0]), p, (dt,))
        A, Q, Pinf, H = vmap(call)(stacked)                             # (Z, *b, S, S), ...
        return A.movedim(0, -3), Q.movedim(0, -3), Pinf, H
    parts = [_Discretised(k)(dt) for k in kernels]
    A, Q, Pinf, H = (torch.stack([p[i] for p in parts]) for i in range(4))
    return A.movedim(0, -3), Q.movedim(0, -3), Pinf, H


def channel_model(kernels: Sequence[Kernel], t: Tensor, steps: Tensor, site_var: Tensor
                  ) -> LinearGaussianSSM:
    """The LGSSM of Z independent GP channels on each sequence's grid, observed through
    sites of variance ``site_var`` (B, T, Z): batch (B, Z), transition (B, Z, T, S, S).

    A = expm(F dt), Q = Pinf - A Pinf A^T (Sarkka and Solin 2019, eq. 12.26); start N(0, Pinf).
    Each distinct step length is discretised once (a regular grid has one or two).
    """
    check_kernels(kernels)
    distinct, where = torch.unique(step_lengths(t, steps), return_inverse=True)
    A, Q, Pinf, H = channel_matrices(kernels, distinct)                # A: (U, Z, S, S)
    A, Q = A[where], Q[where]                                           # (B, T, Z, S, S)
    A, Q = A.transpose(1, 2), Q.transpose(1, 2)                         # (B, Z, T, S, S)
    R = site_var.transpose(1, 2)[..., None, None]                       # (B, Z, T, 1, 1)
    return LinearGaussianSSM(
        initial_mean=Pinf.new_zeros(Pinf.shape[:-1]), initial_cov=Pinf,
        transition_matrix=A, transition_cov=Q, emission_matrix=H, emission_cov=R,
        time_varying={"transition_matrix", "transition_cov", "emission_cov"})


def _as_channel_data(sites: Sites) -> tuple[Tensor, Tensor]:
    """Sites as per-channel observations (B, Z, T, 1) and their mask."""
    y = sites.mean.transpose(1, 2)[..., None]                            # (B, Z, T, 1)
    mask = sites.mask[:, None, :, None].expand(y.shape)
    return torch.where(mask, y, torch.zeros_like(y)), mask


def site_posterior(kernels: Sequence[Kernel], t: Tensor, steps: Tensor, sites: Sites,
                   engine: KalmanEngine) -> SitePosterior:
    """Filter and smooth the sites: log p(y~) and the marginals of q(z_t).

    Args: kernels: Z kernels (one per channel).  t: (B, T) times.  steps: (B, T) bool, the
    grid of each sequence (a prefix, with ``sites.mask`` inside it).  sites: the sites.
    engine: a Kalman engine from dynvae.gp.inference (sequential or parallel).
    """
    if bool((sites.mask & ~steps).any()):
        raise DataError("a site lies outside its sequence's time grid")
    model = channel_model(kernels, t, steps, sites.var)
    y, mask = _as_channel_data(sites)
    sm = engine.smoother(model, y, mask)
    H = model.emission_matrix[:, None, 0, :]                             # (Z, 1, S)
    mean = (sm.smoothed_mean * H).sum(-1)                                # (B, Z, T)
    var = (H[..., None, :] @ sm.smoothed_cov @ H[..., :, None])[..., 0, 0]
    return SitePosterior(sm.log_likelihood.sum(-1), mean.transpose(1, 2),
                         var.transpose(1, 2), sm, model)


def site_log_lik(z: Tensor, sites: Sites) -> Tensor:
    """sum_t log N(y~_t | z_t, v~_t) over sites and channels at paths z (…, B, T, Z) -> (…, B)."""
    lp = -0.5 * (LOG_2PI + sites.var.log() + (sites.mean - z).pow(2) / sites.var)
    return torch.where(sites.mask[..., None], lp, torch.zeros_like(lp)).sum((-1, -2))


def expected_site_log_lik(post: SitePosterior, sites: Sites) -> Tensor:
    """E_q[sum_t log N(y~_t | z_t, v~_t)] in closed form from the marginals, (B,)."""
    sq = (sites.mean - post.mean).pow(2) + post.var
    lp = -0.5 * (LOG_2PI + sites.var.log() + sq / sites.var)
    return torch.where(sites.mask[..., None], lp, torch.zeros_like(lp)).sum((-1, -2))


def kl_to_prior(post: SitePosterior, sites: Sites) -> Tensor:
    """KL(q(s) || p(s)) = E_q[sum_t log N(y~_t | z_t, v~_t)] - log p(y~), (B,)."""
    return expected_site_log_lik(post, sites) - post.log_marginal


def kl_to_prior_per_channel(post: SitePosterior, sites: Sites) -> Tensor:
    """KL(q(s_c) || p(s_c)) of each channel c (the channels are independent under q and
    p, so these add up to :func:`kl_to_prior`), (B, Z)."""
    sq = (sites.mean - post.mean).pow(2) + post.var
    lp = -0.5 * (LOG_2PI + sites.var.log() + sq / sites.var)             # (B, T, Z)
    expected = torch.where(sites.mask[..., None], lp, torch.zeros_like(lp)).sum(1)
    return expected - post.smoothed.log_likelihood                       # (B, Z)


def sample_paths(post: SitePosterior, sites: Sites, n_samples: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """Reparametrised joint draws z ~ q by forward-filter backward-sample, (K, B, T, Z)."""
    s = scalar_ffbs_sample(post.model, post.smoothed.filtered, n_samples=n_samples,
                           generator=generator)                         # (K, B, Z, T, S)
    H = post.model.emission_matrix[:, None, 0, :]                        # (Z, 1, S)
    return (s * H).sum(-1).transpose(-1, -2)                             # (K, B, T, Z)


def sample_marginals(post: SitePosterior, n_samples: int) -> Tensor:
    """Draws from each marginal q(z_t) separately (enough for per-entry moments), (K, B, T, Z)."""
    eps = torch.randn((n_samples, *post.mean.shape), dtype=post.mean.dtype,
                      device=post.mean.device)
    return post.mean + post.var.clamp_min(0).sqrt() * eps
