"""Posterior latent trajectories of the models that expose them, for plots.

One reader per model class (a registry, not a chain of type tests); a model without
a reader simply has no latent plot.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.models.base import DVAE


def _dkf_latents(model, batch: SequenceBatch, n_samples: int) -> tuple[Tensor, Tensor]:
    """Mean and std over K ancestral draws z ~ q(z_{1:T} | x) (seed eq. 16): (B, T, Z)."""
    paths = model.posterior_paths(model._prepare(batch), n_samples)  # z: (K, B, T, Z)
    return paths.z.mean(0), paths.z.std(0)


def _gpvae_latents(model, batch: SequenceBatch, n_samples: int) -> tuple[Tensor, Tensor]:
    """Exact smoothed mean and std of q(z_t) (the GP posterior given the sites): (B, T, Z)."""
    _, post = model.posterior(model._prepare(batch))
    return post.mean, post.var.clamp_min(0).sqrt()


def _latent_sde_latents(model, batch: SequenceBatch, n_samples: int) -> tuple[Tensor, Tensor]:
    """Mean and std over K posterior SDE paths at the observation times: (B, T, Z)."""
    z = model.posterior_paths(model._prepare(batch), n_samples).z       # (K, B, T, Z)
    return z.mean(0), z.std(0)


def _path_latents(model, batch: SequenceBatch, n_samples: int) -> tuple[Tensor, Tensor]:
    """Mean and std over K posterior paths z ~ q(z_{1:T} | x) (STORN, SRNN, RVAE, DSAE):
    (B, T, Z)."""
    z = model.path_terms(model.prepare(batch), n_samples).z                 # (K, B, T, Z)
    return z.mean(0), z.std(0)


def _moment_latents(model, batch: SequenceBatch, n_samples: int) -> tuple[Tensor, Tensor]:
    """The model's own posterior latent moments (KVAE: smoothed LGSSM states; latent ODE:
    z(t_k) over draws of z_0): (B, T, Z)."""
    return model.latent_moments(batch, n_samples)


def _readers() -> dict[type, Callable]:
    from dynvae.models.base import PathModel
    from dynvae.models.dkf import DeepKalmanFilter
    from dynvae.models.gpvae import GPVAE
    from dynvae.models.kvae import KVAE
    from dynvae.models.latent_ode import LatentODE
    from dynvae.models.latent_sde import LatentSDE
    return {DeepKalmanFilter: _dkf_latents, GPVAE: _gpvae_latents,
            LatentSDE: _latent_sde_latents, PathModel: _path_latents,
            KVAE: _moment_latents, LatentODE: _moment_latents}


@torch.no_grad()
def latent_trajectories(model: DVAE, batch: SequenceBatch, n_samples: int = 32
                        ) -> tuple[Tensor, Tensor] | None:
    """(B, T, Z) posterior mean and std of the latents, or None for other models. A
    model's reader is that of its class or of its nearest registered base class."""
    readers = _readers()
    reader = next((readers[c] for c in type(model).__mro__ if c in readers), None)
    return None if reader is None else reader(model, batch, n_samples)
