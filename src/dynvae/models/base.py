"""The contract every dynvae model implements (DESIGN.md, "One model contract")."""

from __future__ import annotations

import abc
import os
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch


class ELBOTerms(NamedTuple):
    """Per-sequence terms of the evidence lower bound (seed eq. 13).

    log_lik: (B,) expected log-likelihood of the observed entries.
    kl: (B,) KL term (0 for models with an exact likelihood).
    n_obs: (B,) number of observed entries, for per-entry normalisation.
    kl_dims: optional (B, Z) the KL split over latent dimensions (summed over time; the
        rows add up to ``kl``), for free bits and the collapse diagnostic; None when a
        model's KL does not split that way.
    """

    log_lik: Tensor
    kl: Tensor
    n_obs: Tensor
    kl_dims: Tensor | None = None

    def loss(self, beta: float = 1.0) -> Tensor:
        """-(log_lik - beta kl).sum() / n_obs.sum(): the training loss per observed entry."""
        return -(self.log_lik - beta * self.kl).sum() / self.n_obs.sum().clamp_min(1)

    def elbo(self) -> Tensor:
        """(B,) the bound itself, log_lik - kl."""
        return self.log_lik - self.kl


class Prediction(NamedTuple):
    """Posterior predictive mean and standard deviation of every entry.

    t: (B, T) times.  mean: (B, T, D).  std: (B, T, D).
    """

    t: Tensor
    mean: Tensor
    std: Tensor


class DVAE(nn.Module, abc.ABC):
    """Abstract base of every model: training bound, imputation, forecasting, sampling.

    Config: the model's configuration dataclass (with ``from_dict``), taken by
    ``from_config`` together with the data and input dimensions.

    continuous_time: False for a discrete-time model, whose step t is the t-th valid row of
    a sequence whatever its time stamp: ``forecast`` maps each time of ``t_future`` to a
    number of steps k >= 1 after the sequence's last time, t_last + k dt with dt the
    sequence's median step (:func:`dynvae.models.common.steps_ahead`), and rejects times
    off that grid. True for a continuous-time model, which uses the times themselves.
    takes_inputs: whether the model can be built with control inputs (input_dim > 0).

    Results of ``reconstruct``, ``forecast``, ``sample`` and ``log_likelihood_bound``
    carry no autograd graph.
    """

    Config: ClassVar[type]
    # True when the model uses the time stamps themselves (a row may sit at any time),
    # False when step t is the t-th row whatever its time (discrete time)
    continuous_time: ClassVar[bool] = False
    takes_inputs: ClassVar[bool] = True

    @abc.abstractmethod
    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        """Evidence lower bound terms; exact models return log p(x) with kl = 0."""

    @abc.abstractmethod
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive of every entry given the observed ones (imputation)."""

    @abc.abstractmethod
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive distribution at ``t_future`` (B, H), strictly increasing and after each
        sequence's last valid time (see ``continuous_time`` for how times become steps).
        ``u_future`` (B, H, U): the inputs at those times, required exactly when the model
        takes inputs."""

    @abc.abstractmethod
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws from the generative model at strictly increasing times ``t``
        (T,); ``u`` (T, U) or (n, T, U): the inputs, required exactly when the model takes
        inputs."""

    @abc.abstractmethod
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """(B,) importance-weighted bound on log p(x) with ``k`` samples (exact for exact
        models)."""

    @classmethod
    def from_config(cls, config: Any, data_dim: int, input_dim: int = 0) -> DVAE:
        """Build from the model's ``Config`` dataclass or a mapping of its fields."""
        if not isinstance(config, cls.Config):
            config = cls.Config.from_dict(config)
        return cls(config, data_dim, input_dim)

    @classmethod
    def adapt_config(cls, config: Any, train: Any) -> tuple[Any, dict]:
        """Resolve data-dependent choices of ``config`` from the training data (a
        SequenceDataset), before the model is built. Returns the config and a record of
        what was measured and chosen (saved in config.json; a "note" entry is printed).
        The default changes nothing."""
        return config, {}

    def loss(self, batch: SequenceBatch, beta: float = 1.0) -> Tensor:
        return self.elbo(batch).loss(beta)

    @property
    def observation_family(self) -> str:
        """The family of p(x_t | z_t): the config's ``observation`` field ("gaussian" or
        "bernoulli"), "gaussian" for a model without one. Evaluation scores predictive
        densities in this family (dynvae.train.evaluation)."""
        return getattr(self.config, "observation", "gaussian")

    def scored_mask(self, batch: SequenceBatch) -> Tensor:
        """(B, T, D) bool: the entries whose density enters ``elbo`` and
        ``log_likelihood_bound`` (all observed entries unless a model says otherwise)."""
        return batch.mask

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class SelfFitting(abc.ABC):
    """Mixin for models that fit themselves (closed form, EM, second-order methods)
    instead of being trained by the gradient ``Trainer``.

    ``FitConfig`` is the dataclass of fitting options that ``dynvae train --set``
    fills in.
    """

    FitConfig: ClassVar[type]

    @abc.abstractmethod
    def fit(self, train: SequenceBatch, val: SequenceBatch | None, config: Any,
            out_dir: str | os.PathLike | None = None, progress: bool = False) -> list[dict]:
        """Fit to ``train``; return the history, one dict of numbers per iteration.

        ``val`` (optional) is scored after fitting; ``out_dir`` is where a model may
        write intermediate files; ``progress`` shows a progress bar (the CLI's choice).
        """
