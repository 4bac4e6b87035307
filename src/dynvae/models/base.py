"""The contract every dynvae model implements (docs/extending.md, "A model"; checked
by tests/models/test_contract.py), and
:class:`PathModel`, its shared implementation for the models whose bounds average over
sampled posterior paths (STORN, SRNN, RVAE, DSAE)."""

from __future__ import annotations

import abc
import os
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from dynvae.data.batch import SequenceBatch
from dynvae.errors import DataError
from dynvae.models.common import (
    at_steps,
    check_positive,
    check_sample_times,
    first_steps,
    forecast_steps,
    iwae_bound,
    mixture_moments,
    prepare_batch,
    repeat_samples,
)


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
        The default reads the frame shape (C, H, W) of frame data into a config with
        frame models (dynvae.models.frames) and changes nothing else."""
        from dynvae.models.frames import with_data_frame_shape
        return with_data_frame_shape(config, train)

    def loss(self, batch: SequenceBatch, beta: float = 1.0) -> Tensor:
        return self.elbo(batch).loss(beta)

    def kl_dim_labels(self, n: int) -> list[str]:
        """Names of the ``n`` columns of ``ELBOTerms.kl_dims`` (for the collapse plot):
        z[0], z[1], ... unless a model has latents of more than one kind."""
        return [f"z[{i}]" for i in range(n)]

    @property
    def draws_at_steps(self) -> bool:
        """True when :meth:`sample` draws at consecutive steps whatever the times it is
        given (discrete time, no time-gap input), so uneven sample times are warned of."""
        return not self.continuous_time and getattr(self, "time_gaps", None) is None

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


class PathTerms(NamedTuple):
    """K posterior paths of a model and the terms of its bounds along them.

    z: (K, B, T, Z) latents drawn from q.  log_lik: (K, B) log-density of the observed
    entries given each path.  kl: (K, B) the closed-form KL terms (seed eq. 10).
    log_ratio: (K, B) log p(z) - log q(z | x) of the drawn latents.  params: the
    observation parameters, each (K, B, T, D).  state: what the model needs to continue
    its generative recursion (model-specific tensors with leading (K, B) or (B,), over
    the steps up to the longest sequence).  kl_dims: (K, B, Z) the KL split over the
    latent dimensions (summed over steps; its sum over Z is ``kl``), or None.
    """

    z: Tensor
    log_lik: Tensor
    kl: Tensor
    log_ratio: Tensor
    params: tuple[Tensor, ...]
    state: tuple[Tensor, ...]
    kl_dims: Tensor | None = None


class PathModel(DVAE):
    """Base of the models whose bounds average over K reparametrised posterior paths and
    whose generative model runs step by step (STORN, SRNN, RVAE, DSAE).

    A subclass sets ``data_dim`` D, ``input_dim`` U, ``observation`` (an
    ``ObservationModel``) and ``config.n_predict_samples``, and implements
    ``draw_paths`` (the paths and bound terms), ``start_after`` and ``initial_state``
    (the generative state after each sequence's last valid step, or before any step),
    and ``generate`` (run the generative model on from a state). The ELBO (seed eq. 13),
    the importance-weighted bound, imputation, forecasts and samples follow from these.
    """

    @abc.abstractmethod
    def draw_paths(self, batch: SequenceBatch, n_samples: int) -> PathTerms:
        """K = ``n_samples`` reparametrised paths z ~ q(z | x) of a prepared batch and the
        bound terms (see :meth:`path_terms`)."""

    @abc.abstractmethod
    def start_after(self, paths: PathTerms, batch: SequenceBatch) -> tuple[Tensor, ...]:
        """Generative state of every path after its sequence's last valid step; rows are
        sample-major (K*B, …), as :func:`repeat_samples` orders them."""

    @abc.abstractmethod
    def initial_state(self, n: int) -> tuple[Tensor, ...]:
        """Generative state of ``n`` fresh sequences before their first step."""

    @abc.abstractmethod
    def generate(self, state: tuple[Tensor, ...], steps: int, u: Tensor | None
                 ) -> tuple[tuple[Tensor, ...], Tensor]:
        """Run the generative model ``steps`` steps on from ``state`` (N rows) with inputs
        u (N, steps, U): the observation parameters, each (N, steps, D), and draws
        (N, steps, D)."""

    @property
    def like(self) -> Tensor:
        """A parameter, whose dtype and device every computation follows."""
        return next(self.parameters())

    def prepare(self, batch: SequenceBatch) -> SequenceBatch:
        """Check the batch against the model and move it to the parameters' dtype/device."""
        batch = prepare_batch(batch, self.data_dim, self.input_dim, self.like)
        self.observation.check_data(batch.x, batch.mask)
        return batch

    def path_terms(self, batch: SequenceBatch, n_samples: int) -> PathTerms:
        """K = ``n_samples`` reparametrised paths z ~ q(z | x) and the bound terms. Steps
        after the longest sequence draw no noise (so padding leaves every draw, bound
        and prediction unchanged) and repeat its last values in z and params; they
        enter no term."""
        batch = self.prepare(batch)
        T, T_valid = batch.n_steps, int(batch.lengths.max())
        if T_valid == T:
            return self.draw_paths(batch, n_samples)
        paths = self.draw_paths(first_steps(batch, T_valid), n_samples)
        extend = lambda v: torch.cat([v, v[:, :, -1:].expand(-1, -1, T - T_valid, -1)], 2)
        return paths._replace(z=extend(paths.z), params=tuple(map(extend, paths.params)))

    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        """Seed eq. 13 with the model's factors, averaged over ``n_samples`` paths."""
        check_positive(n_samples=n_samples)
        batch = self.prepare(batch)
        paths = self.path_terms(batch, n_samples)
        kl_dims = None if paths.kl_dims is None else paths.kl_dims.mean(0)    # (B, Z)
        return ELBOTerms(paths.log_lik.mean(0), paths.kl.mean(0),
                         batch.n_observed().to(paths.log_lik), kl_dims)

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int) -> Tensor:
        """IWAE bound log (1/k) sum_k p(x, z^k) / q(z^k | x) over k paths, (B,)."""
        batch = self.prepare(batch)

        def log_weights(n: int) -> Tensor:
            paths = self.path_terms(batch, n)
            return paths.log_lik + paths.log_ratio
        return iwae_bound(log_weights, k)

    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive mean and std of every entry, Monte Carlo over q."""
        batch = self.prepare(batch)
        paths = self.path_terms(batch, self.config.n_predict_samples)
        mean, var = self.observation.moments(paths.params)                     # (K, B, T, D)
        return Prediction(batch.t, *mixture_moments(mean, var))

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive mean/std at ``t_future`` (B, H), k steps after each sequence's last
        valid step (t_last + k dt, see :func:`steps_ahead`): posterior paths of the past,
        continued by the generative model. ``u_future`` (B, H, U) is needed when the
        model takes inputs."""
        batch = self.prepare(batch)
        steps = forecast_steps(batch, t_future, u_future, self.input_dim)    # (B, H)
        K, B = self.config.n_predict_samples, batch.batch_size
        paths = self.path_terms(batch, K)
        u = None if u_future is None else repeat_samples(u_future.to(self.like), K)
        params, _ = self.generate(self.start_after(paths, batch), int(steps.max()), u)
        mean, var = (at_steps(v.reshape(K, B, *v.shape[1:]), steps)
                     for v in self.observation.moments(params))               # (K, B, H, D)
        return Prediction(t_future.to(mean), *mixture_moments(mean, var))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws at the T steps ``t`` (T,); ``u`` (T, U) or (n, T, U) if inputs."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"sample needs n >= 1 sequences, got {n!r}")
        T = check_sample_times(t, u, self.input_dim, n, even=self.draws_at_steps)
        u = None if u is None else u.to(self.like).expand(n, T, self.input_dim)
        return self.generate(self.initial_state(n), T, u)[1]
