"""The linear Gaussian state-space model, the simplest DVAE (seed, "a Kalman filter is
the simplest DVAE": first-order Markov latents, linear Gaussian observations):

    z_0 ~ N(m0, P0)
    z_t = A z_{t-1} + B u_t + b + w_t,   w_t ~ N(0, Q)
    x_t = H z_t     + D u_t + d + v_t,   v_t ~ N(0, R)

Inference is exact (Kalman filter, RTS smoother from dynvae.ssm), so ``elbo``
returns log p(x) with kl = 0. The model is discrete-time: step t is the t-th
valid row of a sequence, whatever its time stamp. Fitting: EM
(:meth:`LGSSM.fit_em`) or gradients (:meth:`LGSSM.fit_gradient`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.gaussian import condition_on_observation
from dynvae.models import lgssm_ops as ops
from dynvae.models.base import DVAE, ELBOTerms, Prediction, SelfFitting
from dynvae.models.common import (
    DictConfig,
    check_inputs,
    check_positive,
    check_sample_times,
    steps_ahead,
)
from dynvae.models.lgssm_em import e_step
from dynvae.models.lgssm_fit import FitConfig, Optimizer, fit_method
from dynvae.models.lgssm_params import (
    COVARIANCES,
    DiffuseInitial,
    FixedMatrix,
    LearnedInitial,
    LearnedMatrix,
    MatrixBlock,
)
from dynvae.ssm import (
    FilterResult,
    LinearGaussianSSM,
    SmootherResult,
    kalman_filter,
    parallel_kalman_filter,
    parallel_rts_smoother,
    rts_smoother,
)
from dynvae.ssm.native import native_kalman_filter, native_rts_smoother, with_autograd_fallback

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Inference:
    """A Kalman filter and RTS smoother pair with the signatures of dynvae.ssm's."""

    filter: Callable[..., FilterResult]
    smoother: Callable[..., SmootherResult]


# sequential: O(T) steps; parallel: associative scans, O(log T) depth (long sequences)
INFERENCE = {"sequential": Inference(kalman_filter, rts_smoother),
             "parallel": Inference(parallel_kalman_filter, parallel_rts_smoother),
             # C back end (dynvae.ssm.native) where no gradient is needed (EM, reconstruct,
             # forecast, scoring under no_grad); the parallel scan where one is
             "native": Inference(
                 with_autograd_fallback(native_kalman_filter, parallel_kalman_filter),
                 with_autograd_fallback(native_rts_smoother, parallel_rts_smoother))}


@dataclass
class Config(DictConfig):
    """LGSSM structure.

    state_dim: S; None means the data dimension D.
    transition: "random_walk" (A = I, fixed) or "linear" (A learned).
    emission: "identity" (H = I, fixed; needs S = D) or "linear" (H learned).
    initial: "diffuse" (z_0 ~ N(0, kappa I), first observed step(s) not scored, as
        statsmodels' approximate diffuse default) or "learned" (m0, P0 learned).
    diagonal_cov: Q, R (and a learned P0) diagonal instead of full.
    transition_bias, emission_bias: learn b, d.
    inputs: when the data has inputs u, learn B and D (u enters transition and emission).
    diffuse_kappa, diffuse_burn: variance of the diffuse state; observed steps left out.
    dtype: "float64" or "float32".
    inference: "parallel" (associative-scan Kalman filter and RTS smoother, the default;
        much faster on long sequences), "sequential", or "native" (the compiled C
        filter/smoother of dynvae.ssm.native for every call that needs no gradient,
        e.g. EM, reconstruct, forecast; needs a C compiler; gradient fitting then
        uses the parallel scan).
    The default (random walk, identity emission, diffuse start) is the local level
    model, one level per channel.
    """

    model_name = "LGSSM"

    state_dim: int | None = None
    transition: str = "random_walk"
    emission: str = "identity"
    initial: str = "diffuse"
    diagonal_cov: bool = False
    transition_bias: bool = False
    emission_bias: bool = False
    inputs: bool = True
    diffuse_kappa: float = 1e6
    diffuse_burn: int = 1
    dtype: str = "float64"
    inference: str = "parallel"


def _identity(rows: int, cols: int, dtype) -> MatrixBlock:
    if rows != cols:
        raise ConfigError(f"emission 'identity' needs state_dim == data dim, got S={cols}, "
                          f"D={rows}; use emission='linear'")
    return FixedMatrix(torch.eye(rows, dtype=dtype))


TRANSITION_MATRICES = {
    "random_walk": lambda S, dtype: FixedMatrix(torch.eye(S, dtype=dtype)),
    "linear": lambda S, dtype: LearnedMatrix(0.9 * torch.eye(S, dtype=dtype)),
}
EMISSION_MATRICES = {
    "identity": _identity,
    "linear": lambda D, S, dtype: LearnedMatrix(torch.randn(D, S, dtype=dtype) / math.sqrt(S)),
}
INITIALS = {
    "diffuse": lambda S, c, dtype: DiffuseInitial(S, c.diffuse_kappa, c.diffuse_burn, dtype),
    "learned": lambda S, c, dtype: LearnedInitial(S, c.diagonal_cov, dtype),
}


def _choose(table: dict, key: str, what: str):
    if key not in table:
        raise ConfigError(f"unknown {what} {key!r}; choose one of {sorted(table)}")
    return table[key]


class LGSSM(DVAE, SelfFitting):
    """Linear Gaussian SSM with constrained, learnable parameters (see module docstring)."""

    Config: ClassVar[type] = Config
    FitConfig: ClassVar[type] = FitConfig

    def __init__(self, config: Config, data_dim: int, input_dim: int = 0) -> None:
        super().__init__()
        if data_dim < 1:
            raise ConfigError(f"data_dim must be positive, got {data_dim}")
        S = data_dim if config.state_dim is None else int(config.state_dim)
        if S < 1:
            raise ConfigError(f"state_dim must be positive, got {S}")
        dtype = _choose(DTYPES, config.dtype, "dtype")
        self.inference = _choose(INFERENCE, config.inference, "inference")
        self.config, self.data_dim, self.input_dim, self.state_dim = config, data_dim, input_dim, S
        self.transition = _choose(TRANSITION_MATRICES, config.transition, "transition")(S, dtype)
        self.emission = _choose(EMISSION_MATRICES, config.emission, "emission")(data_dim, S, dtype)
        self.initial = _choose(INITIALS, config.initial, "initial state")(S, config, dtype)
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
    def local_level(cls, data_dim: int = 1, **overrides) -> LGSSM:
        """Local level model x_t = z_t + v_t, z_t = z_{t-1} + w_t, diffuse start
        (S = D, A = I, H = I)."""
        return cls(Config(**overrides), data_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.transition_cov.parameters().__next__().dtype

    # -------------------------------------------------------------- parameters
    def ssm(self) -> LinearGaussianSSM:
        """The current parameters as a :class:`LinearGaussianSSM` (differentiable)."""
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
        model = self.ssm()
        return self._score(model, x, mask, u, self.inference.filter(model, x, mask, u))

    def _score(self, model: LinearGaussianSSM, x: Tensor, mask: Tensor, u: Tensor | None,
               f: FilterResult) -> Tensor:
        """(B,) the filter's log-likelihood less the terms of the burn-in steps."""
        if self.initial.burn == 0:
            return f.log_likelihood
        burn = self._burn_steps(mask)                                  # (B, T)
        _, emis_off = model.offsets(x.shape[-2], u)
        y = x if emis_off is None else x - emis_off
        _, _, step_ll = condition_on_observation(
            f.predicted_mean, f.predicted_cov, y, model.emission_matrix, model.emission_cov,
            mask & burn[..., None])                                    # (B, T)
        return f.log_likelihood - step_ll.sum(-1)

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
        model = self.ssm()
        sm = self.inference.smoother(model, x, mask, u)
        return ops.impute(model, x, mask, sm.smoothed_mean, sm.smoothed_cov, u, batch.t.to(x))

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
        x, mask, u = self._inputs(batch)
        k = steps_ahead(batch, t_future)                            # (B, H) int
        if self.transition_input is None:
            check_inputs("u_future", u_future, [], 0)
        model = self.ssm()
        f = self.inference.filter(model, x, mask, u)
        last = (batch.lengths - 1).to(x.device)
        idx = torch.arange(x.shape[0], device=x.device)
        mean, cov = f.filtered_mean[idx, last], f.filtered_cov[idx, last]     # (B, S), (B, S, S)
        u_steps = ops.future_inputs(self.transition_input is not None, k, u_future, x)
        return ops.predict_ahead(model, mean, cov, k, u_steps, t_future.to(x))

    @torch.no_grad()
    def sample(self, n: int, t: Tensor, u: Tensor | None = None) -> Tensor:
        """(n, T, D) draws of x at the T = len(t) steps ``t`` (inputs u: (T, U) or
        (n, T, U))."""
        U = 0 if self.transition_input is None else self.input_dim
        T = check_sample_times(t, u, U, n)
        model = self.ssm()
        m0, P0 = self.initial.sampling_moments()
        if u is not None:
            u = u.to(device=self.device, dtype=self.dtype).expand(n, T, U)
        return ops.sample_paths(model, m0, P0, n, T, u)

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
               progress: bool = False) -> list[dict]:
        """Expectation-maximisation over all sequences of ``batch``; missing entries by
        their conditional moments (see dynvae.models.lgssm_em). Stops when the full
        log-likelihood per observed entry changes by less than ``tol``.

        Returns one row per parameter set visited (row 0: the starting point): step,
        log_likelihood (the score of :meth:`log_likelihood`, summed over sequences),
        log_likelihood_per_entry.
        """
        x, mask, u = self._inputs(batch)
        lengths = batch.lengths.to(x.device)
        n_obs = float(self.scored_mask(batch).sum())
        history, previous = [], None
        with torch.no_grad():
            for step in ops.progress_range(n_iter, progress, "EM"):
                model = self.ssm()
                stats = e_step(model, x, mask, lengths, u, self.inference.smoother)
                score = float(self._score(model, x, mask, u, stats.filtered).sum())
                history.append({"step": step, "log_likelihood": score,
                                "log_likelihood_per_entry": score / n_obs})
                full = float(stats.log_likelihood.sum()) / float(mask.sum())
                if previous is not None and abs(full - previous) < tol:
                    break
                previous = full
                ops.m_step(self, stats)
            else:
                score = float(self.log_likelihood(batch).sum())
                history.append({"step": n_iter, "log_likelihood": score,
                                "log_likelihood_per_entry": score / n_obs})
        return history

    def fit_gradient(self, batch: SequenceBatch, optimizer: Optimizer, steps: int = 50,
                     tol: float = 1e-9, progress: bool = False) -> list[dict]:
        """Maximise :meth:`log_likelihood` per scored entry with ``optimizer``
        (``LBFGS()`` or ``Adam(lr)`` from dynvae.models.lgssm_fit).

        Returns one row per parameter set visited (row 0: the starting point, as in
        :meth:`fit_em`): step, log_likelihood, log_likelihood_per_entry.
        """
        opt = optimizer.build(self.parameters())
        n_obs = float(self.scored_mask(batch).sum())
        with torch.no_grad():
            start = float(self.log_likelihood(batch).sum())

        def closure():
            opt.zero_grad()
            loss = -self.log_likelihood(batch).sum() / n_obs
            loss.backward()
            return loss

        history = [{"step": 0, "log_likelihood": start,
                    "log_likelihood_per_entry": start / n_obs}]
        previous = start if math.isfinite(start) else None
        for step in ops.progress_range(steps, progress, "fit"):
            try:
                opt.step(closure)
                with torch.no_grad():
                    score = float(self.log_likelihood(batch).sum())
            except torch.linalg.LinAlgError:    # a line search into degenerate covariances
                raise DataError("a covariance stopped being positive definite during fitting "
                                "(too few or degenerate observations?); try method='em'"
                                ) from None
            history.append({"step": step + 1, "log_likelihood": score,
                            "log_likelihood_per_entry": score / n_obs})
            if not math.isfinite(score):
                raise DataError("the log-likelihood became non-finite during fitting; "
                                "try method='em' or a smaller learning rate")
            if previous is not None and abs(score - previous) / n_obs < tol:
                break
            previous = score
        self.refresh_initial(batch)
        return history

    @torch.no_grad()
    def refresh_initial(self, batch: SequenceBatch) -> None:
        """For a diffuse start, store the smoothed moments of z_0 used by :meth:`sample`."""
        if not self.initial.learned:
            x, mask, u = self._inputs(batch)
            stats = e_step(self.ssm(), x, mask, batch.lengths.to(x.device), u,
                           self.inference.smoother)
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
