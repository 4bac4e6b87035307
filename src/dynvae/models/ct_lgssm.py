"""The continuous-time linear Gaussian state-space model: the LGSSM on real time.

    dz = (F z + B u + b) dt + L_c dW,   E[dW dW^T] = I dt,  Q_c = L_c L_c^T
    x(t_i) = H z(t_i) + D u_i + d + v_i,   v_i ~ N(0, R)

observed at the (irregular) time stamps t_i. Between two stamps the state moves by the
exact discretisation of the linear SDE over dt = t_i - t_{i-1} (Sarkka and Solin 2019,
ch. 6; dynvae.sde.linear), with u held constant over the interval:

    A(dt) = expm(F dt),   Q(dt) = int_0^dt expm(F s) Q_c expm(F s)^T ds   (Van Loan 1978),
    z_i = A(dt) z_{i-1} + Phi(dt) (B u_i + b) + w_i,  Phi(dt) = int_0^dt expm(F s) ds,

so a five-hour gap is five hours of diffusion, not one step. ``transition="random_walk"``
fixes F = 0 (Brownian levels: A = I, Q = Q_c dt, the continuous-time local level model);
``"linear"`` learns F. Steps that share a length share one transition: the E-step sums
its statistics per distinct step, and the EM Q-function and its gradient are sums over
the distinct steps (dynvae.models.lgssm_objective). Exact inference is the Kalman
smoother with these time-varying A, Q; imputation at times without a row inserts rows
with every entry missing (the smoother's predictive at that time).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.gaussian import batched_mv, symmetrize
from dynvae.models import lgssm_ops as ops
from dynvae.models.base import Prediction
from dynvae.models.lgssm import LGSSM
from dynvae.models.lgssm_config import Config, StepGroups
from dynvae.models.lgssm_em import EMStatistics
from dynvae.models.lgssm_objective import TransitionGroups, transition_term
from dynvae.models.lgssm_params import FixedMatrix, LearnedMatrix
from dynvae.sde.linear import van_loan
from dynvae.ssm import LinearGaussianSSM

STEP_DIGITS = 1e9   # steps equal to 1e-9 of the median step share one transition


def _drift(kind: str, S: int, dtype):
    if kind == "random_walk":
        return FixedMatrix(torch.zeros(S, S, dtype=dtype))
    if kind == "linear":
        return LearnedMatrix(-0.1 * torch.eye(S, dtype=dtype))
    raise ConfigError(f"unknown transition {kind!r}; choose one of ['linear', 'random_walk']")


def distinct_steps(dt: Tensor, reference: float) -> tuple[Tensor, Tensor]:
    """Distinct step lengths (K,) and the index of each entry of dt (*) among them,
    after rounding to 1e-9 of ``reference`` (float time stamps repeat a step only up
    to round-off; the rounding changes a step by < 1e-9 of the median step)."""
    key = torch.round(dt / reference * STEP_DIGITS)
    codes, index = torch.unique(key, return_inverse=True)
    return codes * (reference / STEP_DIGITS), index


def interval_steps(t: Tensor, lengths: Tensor) -> Tensor:
    """(B, T) step lengths t_i - t_{i-1}; entry 0 and padding hold the median step (they
    are unused by the model, and a positive step keeps their Q positive definite)."""
    T = t.shape[-1]
    dt = torch.diff(t, dim=-1, prepend=t[..., :1])
    valid = torch.arange(T, device=t.device)[None, :] < lengths.to(t.device)[:, None]
    inner = valid.clone()
    inner[:, 0] = False
    if not bool(inner.any()):
        return torch.ones_like(t)
    if bool((dt[inner] <= 0).any()):
        raise DataError("times must be strictly increasing within each sequence")
    return torch.where(inner, dt, dt[inner].median())


class ContinuousLGSSM(LGSSM):
    """The LGSSM in continuous time (module docstring). Same Config as :class:`LGSSM`
    (``time="continuous"``): transition "random_walk" or "linear" names the drift F;
    ``transition_cov`` is the diffusion Q_c per unit time."""

    continuous_time = True

    def __init__(self, config: Config, data_dim: int, input_dim: int = 0) -> None:
        super().__init__(dataclasses.replace(config, time="continuous"), data_dim, input_dim)
        self.transition = _drift(config.transition, self.state_dim, self.dtype)

    # -------------------------------------------------------------- parameters
    def step_groups(self, batch: SequenceBatch) -> StepGroups:
        dt = interval_steps(batch.t.to(self.device, self.dtype), batch.lengths)
        steps, index = distinct_steps(dt, float(dt.median()))
        return StepGroups(index, steps)

    def transition_groups(self, groups: StepGroups) -> TransitionGroups:
        """A(dt_k), chol Q(dt_k), Phi(dt_k) B, Phi(dt_k) b for the K distinct steps."""
        dt = groups.steps                                               # (K,)
        S = self.state_dim
        Lc = self.transition_cov.cholesky()
        if not self.transition.learned:                                 # F = 0: Brownian
            eye = torch.eye(S, dtype=dt.dtype, device=dt.device)
            A = eye.expand(dt.shape[0], S, S)
            factor = Lc * dt.sqrt()[:, None, None]
            integral = dt[:, None, None] * eye                          # Phi = dt I
        else:
            F = self.transition()
            A, Q = van_loan(F, self.transition_cov(), dt)               # (K, S, S)
            factor = torch.linalg.cholesky(Q)
            integral = self._integral(F, dt)
        gain = None if self.transition_input is None else integral @ self.transition_input()
        bias = None if self.transition_bias is None else (integral @ self.transition_bias()
                                                          )[..., 0]
        return TransitionGroups(A, factor, gain, bias)

    def _integral(self, F: Tensor, dt: Tensor) -> Tensor | None:
        """Phi(dt) = int_0^dt expm(F s) ds (K, S, S): the top-right block of
        expm([[F, I], [0, 0]] dt); None when no input or bias needs it."""
        if self.transition_input is None and self.transition_bias is None:
            return None
        S = F.shape[-1]
        top = torch.cat([F, torch.eye(S, dtype=F.dtype, device=F.device)], -1)
        M = torch.cat([top, torch.zeros_like(top)], -2)
        return torch.linalg.matrix_exp(M * dt[:, None, None])[:, :S, S:]

    def _ssm_for_groups(self, index: Tensor, groups: TransitionGroups) -> LinearGaussianSSM:
        """The time-varying model with the transition of group index[b, t] at step t."""
        m0, P0 = self.initial.prior()
        Q = groups.cov_factor @ groups.cov_factor.transpose(-1, -2)
        fields = {"transition_matrix": groups.matrix[index], "transition_cov": Q[index]}
        if groups.input_gain is not None:
            fields["transition_input"] = groups.input_gain[index]
        if groups.bias is not None:
            fields["transition_bias"] = groups.bias[index]
        opt = lambda block: None if block is None else block()
        return LinearGaussianSSM(
            initial_mean=m0, initial_cov=P0, emission_matrix=self.emission(),
            emission_cov=self.emission_cov(), emission_input=opt(self.emission_input),
            emission_bias=None if self.emission_bias is None else self.emission_bias()[:, 0],
            time_varying=frozenset(fields), **fields)

    def ssm(self, batch: SequenceBatch | None = None) -> LinearGaussianSSM:
        """The model on the time stamps of ``batch``: (B, T, ...) transitions."""
        if batch is None:
            raise ConfigError("the continuous-time LGSSM needs the time stamps of a batch")
        groups = self.step_groups(batch)
        return self._ssm_for_groups(groups.index, self.transition_groups(groups))

    def _sampling_ssm(self, n: int, t: Tensor) -> LinearGaussianSSM:
        if t.shape[0] > 1 and not bool((torch.diff(t) > 0).all()):
            raise DataError("sample times must be strictly increasing")
        t = t.to(self.device, self.dtype)
        dt = interval_steps(t[None], torch.tensor([t.shape[0]]))[0]     # (T,)
        steps, index = distinct_steps(dt, float(dt.median()))
        return self._ssm_for_groups(index, self.transition_groups(StepGroups(index, steps)))

    # ----------------------------------------------------------------- fitting
    @torch.no_grad()
    def initialize_from_data(self, batch: SequenceBatch) -> None:
        """As :meth:`LGSSM.initialize_from_data`, with the diffusion Q_c scaled so that
        Q(median step) starts where the discrete model's Q does; a learned drift starts
        at F = -I / (mean sequence span): close to Brownian levels."""
        super().initialize_from_data(batch)
        dt = interval_steps(batch.t.to(self.device, self.dtype), batch.lengths)
        self.transition_cov.assign(self.transition_cov() / dt.median())
        if self.transition.learned:
            t = batch.t.to(self.dtype)
            last = t.gather(1, (batch.lengths - 1).to(t.device)[:, None])[:, 0]
            span = float((last - t[:, 0]).mean().clamp_min(float(dt.median())))
            self.transition.assign(-torch.eye(self.state_dim, dtype=self.dtype) / span)

    @torch.no_grad()
    def m_step(self, stats: EMStatistics, groups: StepGroups) -> None:
        """Emission in closed form; the transition in closed form for Brownian levels
        (F = 0), else by maximising its part of the Q-function numerically (a
        generalised EM step, Dempster, Laird and Rubin 1977, sec. 3)."""
        ops.m_step(self, stats, transition=False)
        if float(stats.n_transitions.sum()) == 0:
            return
        if not self.transition.learned:
            self._brownian_m_step(stats, groups.steps)
        else:
            self._numerical_m_step(stats, groups)

    def _brownian_m_step(self, stats: EMStatistics, dt: Tensor) -> None:
        """z_i - z_{i-1} = dt (B u + b) + w, w ~ N(0, Q_c dt): weighted least squares, as
        ordinary least squares of (z_i - z_{i-1}) / sqrt(dt) on sqrt(dt) [u; 1]."""
        S = self.state_dim
        n = stats.transition.shape[-1]
        scale = torch.zeros(dt.shape[0], n, n, dtype=dt.dtype, device=dt.device)
        eye = torch.eye(S, dtype=dt.dtype, device=dt.device)
        root = dt.sqrt()[:, None, None]
        scale[:, :S, :S], scale[:, :S, S:2 * S] = eye / root, -eye / root
        scale[:, 2 * S:, 2 * S:] = torch.eye(n - 2 * S, dtype=dt.dtype) * root
        moment = (scale @ stats.transition @ scale.transpose(-1, -2)).sum(0)
        U = 0 if self.transition_input is None else self.input_dim
        ops.regress(moment, stats.n_transitions.sum(), S,
                    [(self.transition_input, 2 * S), (self.transition_bias, 2 * S + U)],
                    self.transition_cov)

    def _numerical_m_step(self, stats: EMStatistics, groups: StepGroups) -> None:
        """Raise the transition part of the Q-function by L-BFGS from the current
        parameters (kept if it does not rise)."""
        params = [p for block in (self.transition, self.transition_cov,
                                  self.transition_input, self.transition_bias)
                  if block is not None for p in block.parameters()]
        saved = [p.detach().clone() for p in params]
        before = float(transition_term(stats, self.transition_groups(groups)))
        opt = torch.optim.LBFGS(params, max_iter=50, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            with torch.enable_grad():
                loss = -transition_term(stats, self.transition_groups(groups)) / \
                    stats.n_transitions.sum()
                loss.backward()
            return loss

        try:
            opt.step(closure)
            after = float(transition_term(stats, self.transition_groups(groups)))
        except torch.linalg.LinAlgError:         # a line search into a singular Q(dt)
            after = float("nan")
        if not after >= before:
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)

    # ------------------------------------------------------------- prediction
    def forecast(self, batch: SequenceBatch, t_future: Tensor,
                 u_future: Tensor | None = None) -> Prediction:
        """Predictive of x at any times ``t_future`` (B, H), strictly increasing and after
        each sequence's last time; with inputs, ``u_future`` (B, H, U) holds u over each
        interval up to t_future[:, h]."""
        x, _, _ = self._inputs(batch)
        tf = t_future.to(x)
        t_last = batch.t.to(x).gather(1, (batch.lengths - 1).to(x.device)[:, None])
        if tf.ndim != 2 or tf.shape[0] != x.shape[0] or tf.shape[1] < 1:
            raise DataError(f"t_future must have shape (B={x.shape[0]}, H), got "
                            f"{tuple(t_future.shape)}")
        dt = torch.diff(torch.cat([t_last, tf], 1), dim=1)                  # (B, H)
        if not bool(torch.isfinite(dt).all()) or bool((dt <= 0).any()):
            raise DataError("t_future must be finite, strictly increasing and after each "
                            "sequence's last time")
        if self.transition_input is not None and (
                u_future is None or tuple(u_future.shape[:2]) != tuple(dt.shape)):
            raise DataError(f"the model has inputs: forecast needs u_future of shape "
                            f"(B, H={dt.shape[1]}, U)")
        steps, index = distinct_steps(dt, float(dt.median()))
        model = self._ssm_for_groups(index, self.transition_groups(StepGroups(index, steps)))
        mean, cov = self._last_filtered(batch)
        u = None if u_future is None else u_future.to(x)
        trans_off, _ = model.offsets(dt.shape[1], u)
        means, covs = [], []
        for h in range(dt.shape[1]):
            A, Q = model.transition_matrix[:, h], model.transition_cov[:, h]
            mean = batched_mv(A, mean)
            if trans_off is not None:
                mean = mean + trans_off[:, h]
            cov = symmetrize(A @ cov @ A.transpose(-1, -2) + Q)
            means.append(mean)
            covs.append(cov)
        return ops.emit(model, torch.stack(means, 1), torch.stack(covs, 1), u, tf)
