"""The linear Gaussian state-space model, the simplest DVAE (seed, "a Kalman filter is
the simplest DVAE": first-order Markov latents, linear Gaussian observations):

    z_0 ~ N(m0, P0)
    z_t = A z_{t-1} + B u_t + b + w_t,   w_t ~ N(0, Q)
    x_t = H z_t     + D u_t + d + v_t,   v_t ~ N(0, R)

Inference is exact (Kalman filter, RTS smoother from dynvae.ssm), so ``elbo``
returns log p(x) with kl = 0. The model is discrete-time: step t is the t-th
valid row of a sequence, whatever its time stamp (the continuous-time model of
dynvae.models.ct_lgssm uses the stamps). Fitting: EM (:meth:`LGSSM.fit_em`) or gradients
(:meth:`LGSSM.fit_gradient`, by default Fisher's identity on one smoother pass without
autograd); see dynvae.models.lgssm_fit.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.gaussian import condition_on_observation
from dynvae.models import lgssm_fit as fitting
from dynvae.models import lgssm_ops as ops
from dynvae.models.base import DVAE, ELBOTerms, Prediction, SelfFitting
from dynvae.models.common import check_inputs, check_positive, check_sample_times, steps_ahead
from dynvae.models.lgssm_config import (
    DTYPES,
    EMISSIONS,
    INFERENCE,
    INITIALS,
    TIMES,
    TRANSITIONS,
    Config,
    StepGroups,
    auto_inference,
    choose,
)
from dynvae.models.lgssm_em import EMStatistics
from dynvae.models.lgssm_fit import FitConfig, Optimizer, fit_method
from dynvae.models.lgssm_objective import (
    EmissionParams,
    TransitionGroups,
    emission_term,
    initial_term,
    transition_term,
)
from dynvae.models.lgssm_params import COVARIANCES, DiffuseInitial, LearnedMatrix
from dynvae.ssm import FilterResult, LinearGaussianSSM

__all__ = ["INFERENCE", "LGSSM", "Config", "FitConfig"]


class LGSSM(DVAE, SelfFitting):
    """Linear Gaussian SSM with constrained, learnable parameters (see module docstring)."""

    Config: ClassVar[type] = Config
    FitConfig: ClassVar[type] = FitConfig
    continuous_time: ClassVar[bool] = False

    def __init__(self, config: Config, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        if data_dim < 1:
            raise ConfigError(f"data_dim must be positive, got {data_dim}")
        S = data_dim if config.state_dim is None else int(config.state_dim)
        if S < 1:
            raise ConfigError(f"state_dim must be positive, got {S}")
        dtype = choose(DTYPES, config.dtype, "dtype")
        if choose(TIMES, config.time, "time") == "continuous" and not self.continuous_time:
            raise ConfigError("time='continuous' is the model of dynvae.models.ct_lgssm: "
                              "build it with LGSSM.from_config(config, ...)")
        self.inference = auto_inference() if config.inference == "auto" else choose(
            INFERENCE, config.inference, "inference")
        self.config, self.data_dim, self.input_dim, self.state_dim = config, data_dim, input_dim, S
        if S != data_dim and (config.emission, config.initial) == ("identity", "diffuse"):
            # the defaults (a local level per channel) fix H = I and a diffuse start;
            # another state size needs both changed: say so at once, not one per run
            learn = "" if config.transition == "linear" else (
                " (and model.transition=linear to learn the dynamics: a random walk "
                "in every state coordinate cannot oscillate or revert)")
            raise ConfigError(
                f"state_dim={S} differs from the data's {data_dim} channel(s): the "
                "default local level model (emission='identity', initial='diffuse') needs "
                "state_dim equal to it; a larger state needs a learned emission and start, "
                f"--set model.emission=linear --set model.initial=learned{learn}")
        self.transition = choose(TRANSITIONS, config.transition, "transition")(S, dtype)
        self.emission = choose(EMISSIONS, config.emission, "emission")(data_dim, S, dtype)
        self.initial = choose(INITIALS, config.initial, "initial state")(S, config, dtype)
        if isinstance(self.initial, DiffuseInitial) and self.emission.learned:
            raise ConfigError("initial='diffuse' needs a fixed emission (emission='identity'): "
                              "with a learned H the diffuse likelihood has no maximum; "
                              "use initial='learned'")
        cov = COVARIANCES[bool(config.diagonal_cov)]
        self.transition_cov = cov(S, 0.1, dtype)
        self.emission_cov = cov(data_dim, 0.5, dtype)
        U = input_dim if config.inputs else 0
        zeros = lambda *shape: LearnedMatrix(torch.zeros(*shape, dtype=dtype))
        self.transition_input = zeros(S, U) if U else None
        self.emission_input = zeros(data_dim, U) if U else None
        self.transition_bias = zeros(S, 1) if config.transition_bias else None
        self.emission_bias = zeros(data_dim, 1) if config.emission_bias else None

    @classmethod
    def from_config(cls, config: Config, data_dim: int, input_dim: int = 0) -> LGSSM:
        """The discrete model, or the continuous-time one for ``time="continuous"``."""
        if not isinstance(config, Config):
            config = Config.from_dict(config)
        if config.time == "continuous" and not cls.continuous_time:
            from dynvae.models.ct_lgssm import ContinuousLGSSM
            return ContinuousLGSSM(config, data_dim, input_dim)
        return cls(config, data_dim, input_dim)

    @classmethod
    def adapt_config(cls, config: Config, train) -> tuple[Config, dict]:
        """Resolve ``time="auto"`` from the irregularity of the training times (a
        SequenceDataset): continuous time for irregular data. Returns the config and
        the measured irregularity with the choice, for config.json."""
        from dynvae.data.timing import time_irregularity
        irregularity = time_irregularity(train)
        choice = {"time_irregularity": irregularity.as_dict(), "time_requested": config.time}
        if config.time != "auto":
            return config, choice
        time = "continuous" if irregularity.irregular else "discrete"
        kind = "irregular" if irregularity.irregular else "regular"
        choice["note"] = (f"times are {kind} ({irregularity.describe()}): {time}-time "
                          f"LGSSM (time={time}; --set time=... chooses)")
        return dataclasses.replace(config, time=time), choice

    @classmethod
    def local_level(cls, data_dim: int = 1, **overrides) -> LGSSM:
        """Local level model x_t = z_t + v_t, z_t = z_{t-1} + w_t, diffuse start
        (S = D, A = I, H = I)."""
        return cls(Config(**overrides), data_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.transition_cov.parameters().__next__().dtype

    # -------------------------------------------------------------- parameters
    def ssm(self, batch: SequenceBatch | None = None) -> LinearGaussianSSM:
        """The current parameters as a :class:`LinearGaussianSSM` (differentiable). The
        discrete model does not depend on ``batch``; the continuous-time model builds its
        per-interval transitions from ``batch.t``."""
        m0, P0 = self.initial.prior()
        opt = lambda block, squeeze=False: None if block is None else (
            block().squeeze(-1) if squeeze else block())
        return LinearGaussianSSM(
            initial_mean=m0, initial_cov=P0,
            transition_matrix=self.transition(), transition_cov=self.transition_cov(),
            emission_matrix=self.emission(), emission_cov=self.emission_cov(),
            transition_bias=opt(self.transition_bias, True),
            emission_bias=opt(self.emission_bias, True),
            transition_input=opt(self.transition_input), emission_input=opt(self.emission_input))

    def step_groups(self, batch: SequenceBatch) -> StepGroups:
        """Which transition each step uses: one shared transition in discrete time."""
        return StepGroups(None, None)

    def transition_groups(self, groups: StepGroups) -> TransitionGroups:
        """Transition parameters per group (K = 1 here), differentiable."""
        opt = lambda block: None if block is None else block()[None]
        bias = None if self.transition_bias is None else self.transition_bias()[None, :, 0]
        return TransitionGroups(self.transition()[None], self.transition_cov.cholesky()[None],
                                opt(self.transition_input), bias)

    def emission_params(self) -> EmissionParams:
        bias = None if self.emission_bias is None else self.emission_bias()[:, 0]
        gain = None if self.emission_input is None else self.emission_input()
        return EmissionParams(self.emission(), self.emission_cov.cholesky(), gain, bias)

    def expected_log_likelihood(self, stats: EMStatistics, groups: StepGroups) -> Tensor:
        """The EM Q-function E[log p(x, z | theta)] at the current parameters from one
        E-step's statistics, () and differentiable (dynvae.models.lgssm_objective)."""
        q = transition_term(stats, self.transition_groups(groups)) + emission_term(
            stats, self.emission_params())
        if self.initial.learned:
            q = q + initial_term(stats, *self.initial.prior_factor())
        return q

    @torch.no_grad()
    def m_step(self, stats: EMStatistics, groups: StepGroups) -> None:
        """Closed-form M-step (Shumway and Stoffer 1982)."""
        ops.m_step(self, stats)

    def _inputs(self, batch: SequenceBatch) -> tuple[Tensor, Tensor, Tensor | None]:
        """Validated (x, mask, u) in the model's dtype and device; u zero beyond lengths."""
        if batch.dim != self.data_dim:
            raise DataError(f"the data has {batch.dim} channels, the model expects "
                            f"{self.data_dim}")
        b = batch.to(device=self.device, dtype=self.dtype)
        if self.transition_input is None:
            return b.x, b.mask, None
        if b.u is None or b.u.shape[-1] != self.input_dim:
            got = "no inputs" if b.u is None else f"{b.u.shape[-1]} input channels"
            raise DataError(f"the model expects {self.input_dim} input channels, got {got}")
        return b.x, b.mask, torch.where(b.valid[..., None], b.u, torch.zeros_like(b.u))

    # ------------------------------------------------------------- likelihood
    def _burn_steps(self, mask: Tensor) -> Tensor:
        """(B, T) bool: the first ``burn`` observed steps, left out of the score."""
        observed = mask.any(-1)
        return observed & (observed.cumsum(-1) <= self.initial.burn)

    def scored_mask(self, batch: SequenceBatch) -> Tensor:
        _, mask, _ = self._inputs(batch)
        return mask & ~self._burn_steps(mask)[..., None]

    def log_likelihood(self, batch: SequenceBatch) -> Tensor:
        """(B,) exact log p(x_observed) (for a diffuse start: given the burn-in steps)."""
        x, mask, u = self._inputs(batch)
        model = self.ssm(batch)
        return self._score(model, x, mask, u, self.inference.filter(model, x, mask, u))

    def burn_log_likelihood(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor,
                            u: Tensor | None, f: FilterResult) -> Tensor:
        """(B,) log-density of the burn-in steps under the filter pass ``f``."""
        burn = self._burn_steps(mask)                                  # (B, T)
        if not bool(burn.any()):
            return x.new_zeros(x.shape[0])
        n = int(torch.nonzero(burn.any(0)).max()) + 1                 # steps up to the last
        _, emis_off = model.offsets(x.shape[-2], u)
        y = (x if emis_off is None else x - emis_off)[:, :n]
        H, R = model.emission_matrix, model.emission_cov
        if "emission_matrix" in model.time_varying or "emission_cov" in model.time_varying:
            H, R = H[..., :n, :, :], R[..., :n, :, :]
        _, _, step_ll = condition_on_observation(
            f.predicted_mean[:, :n], f.predicted_cov[:, :n], y, H, R,
            mask[:, :n] & burn[:, :n, None])                           # (B, n)
        return step_ll.sum(-1)

    def _score(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor, u: Tensor | None,
               f: FilterResult) -> Tensor:
        """(B,) the filter's log-likelihood less the terms of the burn-in steps."""
        if self.initial.burn == 0:
            return f.log_likelihood
        return f.log_likelihood - self.burn_log_likelihood(model, x, mask, u, f)

    def elbo(self, batch: SequenceBatch, n_samples: int = 1) -> ELBOTerms:
        """The exact log-likelihood with kl = 0 (``n_samples`` is not needed)."""
        check_positive(n_samples=n_samples)
        ll = self.log_likelihood(batch)
        n_obs = self.scored_mask(batch).sum((1, 2)).to(ll.dtype)
        return ELBOTerms(ll, torch.zeros_like(ll), n_obs)

    @torch.no_grad()
    def log_likelihood_bound(self, batch: SequenceBatch, k: int = 1) -> Tensor:
        """(B,) the exact log-likelihood (no sampling is needed)."""
        check_positive(k=k)
        return self.log_likelihood(batch)

    # ------------------------------------------------------------- prediction
    @torch.no_grad()
    def reconstruct(self, batch: SequenceBatch) -> Prediction:
        """Posterior predictive of every entry given all observed ones.

        Observed entries: a fresh draw at that step, mean H m_s + c and std
        sqrt(diag(H P_s H^T + R)) (m_s, P_s smoothed). Missing entries: the exact
        conditional p(x_m | x_observed), which also uses the observed entries of the
        same step through the correlations of R (equal to the above for diagonal R).
        """
        x, mask, u = self._inputs(batch)
        model = self.ssm(batch)
        sm = self.inference.smoother(model, x, mask, u)
        return ops.impute(model, x, mask, sm.smoothed_mean, sm.smoothed_cov, u, batch.t.to(x))

    def _last_filtered(self, batch: SequenceBatch) -> tuple[Tensor, Tensor]:
        """Filtered mean (B, S) and covariance (B, S, S) at each sequence's last step."""
        x, mask, u = self._inputs(batch)
        f = self.inference.filter(self.ssm(batch), x, mask, u)
        last = (batch.lengths - 1).to(x.device)
        idx = torch.arange(x.shape[0], device=x.device)
        return f.filtered_mean[idx, last], f.filtered_cov[idx, last]

    @torch.no_grad()
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive of x at ``t_future`` (B, H) after each sequence's last valid step.

        The model is discrete-time: t_future must lie on each sequence's grid,
        t_future = t_last + k dt with integer k >= 1 and dt the median step of the
        sequence (1 for a one-step sequence); k = round((t_future - t_last) / dt).
        With inputs, ``u_future`` (B, H, U) gives u at steps k = 1..H (then t_future
        must be exactly those steps).
        """
        x, _, _ = self._inputs(batch)
        k = steps_ahead(batch, t_future)                            # (B, H) int
        if self.transition_input is None:
            check_inputs("u_future", u_future, [], 0)
        mean, cov = self._last_filtered(batch)                      # (B, S), (B, S, S)
        u_steps = ops.future_inputs(self.transition_input is not None, k, u_future, x)
        return ops.predict_ahead(self.ssm(), mean, cov, k, u_steps, t_future.to(x))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws of x at the T = len(t) steps ``t`` (inputs u: (T, U) or
        (n, T, U))."""
        U = 0 if self.transition_input is None else self.input_dim
        T = check_sample_times(t, u, U, n, even=self.draws_at_steps)
        model = self._sampling_ssm(n, t)
        m0, P0 = self.initial.sampling_moments()
        if u is not None:
            u = u.to(device=self.device, dtype=self.dtype).expand(n, T, U)
        return ops.sample_paths(model, m0, P0, n, T, u)

    def _sampling_ssm(self, n: int, t: Tensor) -> LinearGaussianSSM:
        """The model that :meth:`sample` draws n sequences at times t (T,) from."""
        return self.ssm()

    # ----------------------------------------------------------------- fitting
    @torch.no_grad()
    def initialize_from_data(self, batch: SequenceBatch) -> None:
        """Set noise covariances from the observed variance, biases from the observed
        mean and a learned H from the principal components of the data."""
        x, mask, _ = self._inputs(batch)
        mean, cov = ops.observed_moments(x, mask)                  # (D,), (D, D)
        var = torch.diagonal(cov).clamp_min(1e-12)
        self.emission_cov.assign(torch.diag(0.5 * var))
        scale = float(var.mean())
        self.transition_cov.assign(0.1 * scale * torch.eye(self.state_dim, dtype=x.dtype)
                                   if not self.emission.learned
                                   else 0.1 * torch.eye(self.state_dim, dtype=x.dtype))
        if self.emission.learned:
            self.emission.assign(ops.pca_loadings(cov, self.state_dim))
        if self.emission_bias is not None:
            self.emission_bias.assign(mean.unsqueeze(-1))

    def fit_em(self, batch: SequenceBatch, n_iter: int = 100, tol: float = 1e-9,
               progress: bool = False, max_seconds: float | None = None) -> list[dict]:
        """Expectation-maximisation; see :func:`dynvae.models.lgssm_fit.fit_em`."""
        return fitting.fit_em(self, batch, n_iter, tol, progress, max_seconds)

    def fit_gradient(self, batch: SequenceBatch, optimizer: Optimizer, steps: int = 50,
                     tol: float = 1e-9, progress: bool = False, gradient: str = "fisher",
                     max_seconds: float | None = None) -> list[dict]:
        """Gradient ascent; see :func:`dynvae.models.lgssm_fit.fit_gradient`."""
        return fitting.fit_gradient(self, batch, optimizer, steps, tol, progress, gradient,
                                    max_seconds)

    @torch.no_grad()
    def refresh_initial(self, batch: SequenceBatch) -> None:
        """For a diffuse start, store the smoothed moments of z_0 used by :meth:`sample`."""
        if not self.initial.learned:
            stats = fitting.e_step_of(self, batch)
            self.initial.assign(stats.initial_mean, stats.initial_cov)

    def fit(self, train: SequenceBatch, val: SequenceBatch | None, config: FitConfig,
            out_dir=None, progress: bool = False) -> list[dict]:
        """SelfFitting entry point used by ``dynvae train``."""
        method = fit_method(config.method)
        if config.init_from_data:
            self.initialize_from_data(train)
        history = method(self, train, config, progress)
        if val is not None:
            with torch.no_grad():
                val_ll = float(self.log_likelihood(val).sum())
            history[-1]["val_log_likelihood_per_entry"] = val_ll / float(
                self.scored_mask(val).sum())
        return history
