"""StateSpaceGP: exact GP regression in O(T) with the Kalman filter and RTS smoother.

The GP prior of each output is the linear SDE of its kernel, observed with Gaussian noise;
discretised on the (irregular) time grid it is an LGSSM, so the Kalman filter gives the
exact log marginal likelihood and the RTS smoother the exact posterior marginals
(Hartikainen and Sarkka 2010). Prediction at new times merges them into the grid as
unobserved steps. Outputs are independent GPs, each with its own copy of the kernel's
hyperparameters and its own noise variance; NaN values are missing. A parametric prior mean
m(t) (dynvae.gp.mean) is subtracted before the Kalman recursions and added back to the
posterior, which keeps the likelihood exact and O(T).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dynvae.errors import ConfigError, DataError, NumericalError
from dynvae.gp.discretize import gp_state_space_model
from dynvae.gp.inference import AutoKalman, KalmanEngine
from dynvae.gp.kernels.base import Kernel
from dynvae.gp.mean import MeanFunction, ZeroMean
from dynvae.ssm import LinearGaussianSSM, ffbs_sample
from dynvae.timegrid import check_time_grid

_REJECTED_LOSS = 1e6       # per observation; see _Objective
_MAX_RESTARTS = 5
_RESTART_GAIN = 1e-4         # nats per observation a run must gain for another


class GPPrediction(NamedTuple):
    """Posterior at times t (N,): latent mean (N, D), latent variance (N, D), and the
    observation noise variance (D,) to add for predictive bands of y."""

    t: Tensor
    mean: Tensor
    variance: Tensor
    noise_variance: Tensor


class FitResult(NamedTuple):
    """log_marginal_likelihood after fitting; n_evaluations of it; converged: L-BFGS
    stopped on its tolerances before max_iter iterations (False: at the limit)."""

    log_marginal_likelihood: float
    n_evaluations: int
    converged: bool | None = None


def check_data(t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate (T,) times and (T,) or (T, D) values; return t, x (T, D) with 0 at missing
    entries, and the mask (T, D) True where observed."""
    check_time_grid(t, name="times", ndim=1)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != t.shape[0]:
        raise DataError(f"values must be (T,) or (T, D) with T={t.shape[0]}, got {tuple(x.shape)}")
    if bool(torch.isinf(x).any()):
        raise DataError("values contain inf")
    mask = ~torch.isnan(x)
    empty = (~mask).all(0).nonzero().flatten().tolist()
    if empty:
        raise DataError(f"output column(s) {empty} have no observed value")
    return t, torch.where(mask, x, torch.zeros_like(x)), mask


class StateSpaceGP(nn.Module):
    """Independent-output GP regression with a state-space kernel.

    Args:
        kernel: the prior kernel; each of the D outputs gets its own copy.
        num_outputs: D.
        noise_variance: initial Gaussian noise variance (learnable, positive via log).
        engine: Kalman engine (default AutoKalman(): the fastest valid one per call; see
            dynvae.ssm.engines).
        mean: prior mean of one output (default ZeroMean()); each output gets its own copy,
            learned with the hyperparameters.
    """

    def __init__(self, kernel: Kernel, num_outputs: int = 1, noise_variance: float = 0.1,
                 engine: KalmanEngine | None = None, mean: MeanFunction | None = None
                 ) -> None:
        super().__init__()
        if num_outputs < 1:
            raise DataError(f"num_outputs must be >= 1, got {num_outputs}")
        if not (isinstance(noise_variance, (int, float)) and noise_variance > 0
                and math.isfinite(noise_variance)):
            raise ConfigError(f"noise_variance must be a positive number, got "
                              f"{noise_variance!r}")
        self.kernels = nn.ModuleList([copy.deepcopy(kernel) for _ in range(num_outputs)])
        mean = ZeroMean() if mean is None else mean
        self.means = nn.ModuleList([copy.deepcopy(mean) for _ in range(num_outputs)])
        dtype = kernel.dtype
        self.log_noise_variance = nn.Parameter(
            torch.full((num_outputs,), math.log(noise_variance), dtype=dtype))
        self.engine = engine or AutoKalman()
        self.train_t: Tensor | None = None
        self.train_x: Tensor | None = None

    @property
    def noise_variance(self) -> Tensor:
        return self.log_noise_variance.exp()

    @property
    def num_outputs(self) -> int:
        return len(self.kernels)

    def state_space_model(self, t: Tensor) -> LinearGaussianSSM:
        """The LGSSM on grid t (T,), outputs as batch axis: transition (D, T, S, S)."""
        return gp_state_space_model(list(self.kernels), t, self.noise_variance)

    def prior_mean(self, t: Tensor) -> Tensor:
        """m(t) of every output at times t (N,) -> (N, D)."""
        return torch.stack([m(t) for m in self.means], -1)             # (N, D)

    def _as_ssm_data(self, t: Tensor, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Residuals x - m(t) at observed entries (0 elsewhere) as (D, T, 1), and the mask."""
        if x.shape[-1] != self.num_outputs:
            raise DataError(f"values have {x.shape[-1]} outputs, the model has {self.num_outputs}")
        r = torch.where(mask, x - self.prior_mean(t), torch.zeros_like(x))   # (T, D)
        return r.T.unsqueeze(-1), mask.T.unsqueeze(-1)                 # (D, T, 1)

    def _cast(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Times and values in the model's dtype (float32 data into a float64 GP)."""
        for name, v in (("times", t), ("values", x)):
            if not isinstance(v, Tensor):
                raise DataError(f"{name} must be a torch tensor, got {type(v).__name__} "
                                "(use torch.as_tensor(..., dtype=torch.float64))")
        dtype = self.log_noise_variance.dtype
        return (t.to(dtype) if t.is_floating_point() else t,
                x.to(dtype) if x.is_floating_point() else x)

    def log_marginal_likelihood(self, t: Tensor, x: Tensor) -> Tensor:
        """Exact log p(x_observed) summed over outputs, by the Kalman filter in O(T).

        Args: t (T,) strictly increasing times, x (T,) or (T, D) with NaN where missing.
        """
        t, x = self._cast(t, x)
        t, x, mask = check_data(t, x)
        xs, ms = self._as_ssm_data(t, x, mask)
        return self.engine.log_likelihood(self.state_space_model(t), xs, ms).sum()

    def set_data(self, t: Tensor, x: Tensor) -> None:
        """Store the training data used by :meth:`predict` and :meth:`sample_posterior`."""
        t, x = self._cast(t, x)
        check_data(t, x)
        self.train_t, self.train_x = t, (x[:, None] if x.ndim == 1 else x)

    def initialize_mean(self, t: Tensor, x: Tensor) -> None:
        """Set each output's mean from its observed values (least squares for basis means)."""
        t, x = self._cast(t, x)
        t, _, _ = check_data(t, x)
        x = x[:, None] if x.ndim == 1 else x
        for d, m in enumerate(self.means):
            m.initialize(t, x[:, d])

    def fit(self, t: Tensor, x: Tensor, max_iter: int = 100, tolerance: float = 1e-9,
            initialize_mean: bool = True,
            callback: Callable[[int, float], None] | None = None) -> FitResult:
        """Maximise the exact log marginal likelihood over all hyperparameters and the mean's
        parameters with L-BFGS (strong Wolfe line search); stores (t, x) for prediction.
        The mean starts from :meth:`initialize_mean` unless ``initialize_mean`` is False.

        ``max_iter`` bounds the L-BFGS iterations in all. A run stops once an iteration
        changes the log marginal likelihood per observation, or every parameter, by less
        than ``tolerance`` (or the largest gradient entry falls below it), or when its
        curvature pairs stop giving a descent direction; it is then restarted from where it
        stopped with a fresh memory as long as the previous run gained more than
        ``1e-4 * n_observed`` nats (ill-conditioned problems, e.g. a new kernel part added
        to a fitted kernel, otherwise stall far from the optimum). ``callback(n, lml)`` is
        called after the n-th evaluation with that evaluation's log marginal likelihood.
        """
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ConfigError(f"max_iter must be a positive integer, got {max_iter!r}")
        t, x = self._cast(t, x)
        self.set_data(t, x)
        if initialize_mean:
            self.initialize_mean(t, x)
        objective = _Objective(self, t, x, callback)
        done, previous = 0, -math.inf
        try:
            for _ in range(_MAX_RESTARTS + 1):
                opt = torch.optim.LBFGS(self.parameters(), max_iter=max_iter - done,
                                        tolerance_grad=tolerance, tolerance_change=tolerance,
                                        line_search_fn="strong_wolfe")
                objective.optimizer = opt
                opt.step(objective)
                done += opt.state[opt.param_groups[0]["params"][0]].get("n_iter", 0)
                with torch.no_grad():
                    lml = float(self.log_marginal_likelihood(t, x))
                if done >= max_iter or lml - previous <= _RESTART_GAIN * objective.n_obs:
                    break
                previous = lml
        except torch.linalg.LinAlgError as err:   # degenerate variances at a step
            detail = f": {err}" if isinstance(err, NumericalError) else ""
            raise DataError(f"a variance stopped being positive during fitting "
                            f"({objective.n_obs} observed values: too few or degenerate?)"
                            f"{detail}") from None
        return FitResult(lml, objective.count, converged=done < max_iter)

    def _merged(self, t_new: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Training grid merged with t_new: (grid (N,), x (N, D), mask (N, D), rows of t_new)."""
        if self.train_t is None:
            raise DataError("no training data: call fit(t, x) or set_data(t, x) first")
        t, x, mask = check_data(self.train_t, self.train_x)
        if t_new is None:
            return t, x, mask, torch.arange(len(t), device=t.device)
        t_new = torch.as_tensor(t_new, dtype=t.dtype, device=t.device)
        if t_new.ndim > 1:
            raise DataError(f"prediction times must be (N,), got shape {tuple(t_new.shape)}")
        t_new = t_new.reshape(-1)
        if not bool(torch.isfinite(t_new).all()):
            raise DataError("prediction times contain NaN or inf")
        grid, inverse = torch.unique(torch.cat([t, t_new]), sorted=True, return_inverse=True)
        xg = x.new_zeros(len(grid), x.shape[1])
        mg = torch.zeros(len(grid), x.shape[1], dtype=torch.bool, device=x.device)
        xg[inverse[: len(t)]] = x
        mg[inverse[: len(t)]] = mask
        return grid, xg, mg, inverse[len(t):]

    def predict(self, t_new: Tensor | None = None) -> GPPrediction:
        """Posterior mean and variance of the latent f at t_new (N,) (default: the training
        times): interpolation and extrapolation by smoothing on the merged grid."""
        grid, x, mask, rows = self._merged(t_new)
        xs, ms = self._as_ssm_data(grid, x, mask)
        model = self.state_space_model(grid)
        sm = self.engine.smoother(model, xs, ms)
        H = model.emission_matrix[:, None]                              # (D, 1, 1, S)
        mean = (H @ sm.smoothed_mean[..., None])[..., 0, 0]             # (D, N)
        var = (H @ sm.smoothed_cov @ H.transpose(-1, -2))[..., 0, 0]    # (D, N)
        t_out = grid[rows]
        return GPPrediction(t_out, mean[:, rows].T + self.prior_mean(t_out), var[:, rows].T,
                            self.noise_variance.detach())

    def sample_posterior(self, t_new: Tensor | None = None, n_samples: int = 1,
                         generator: torch.Generator | None = None) -> Tensor:
        """Exact posterior draws of the latent f at t_new by forward-filter backward-sample.

        Returns: (K, N, D) with K = n_samples.
        """
        grid, x, mask, rows = self._merged(t_new)
        xs, ms = self._as_ssm_data(grid, x, mask)
        model = self.state_space_model(grid)
        z = ffbs_sample(model, xs, ms, n_samples=n_samples, generator=generator)  # (K, D, N, S)
        f = (model.emission_matrix[:, None] @ z[..., None])[..., 0, 0]  # (K, D, N)
        return f[:, :, rows].transpose(1, 2) + self.prior_mean(grid[rows])     # (K, N, D)

    def hyperparameters(self) -> dict[str, float]:
        """Flat name -> value of every positive hyperparameter (noise included)."""
        out = {}
        for d, k in enumerate(self.kernels):
            prefix = f"output{d}." if self.num_outputs > 1 else ""
            out.update({prefix + name: v for name, v in k.hyperparameters().items()})
            out[prefix + "noise_variance"] = float(self.noise_variance[d].detach())
        return out

    def mean_parameters(self) -> dict[str, float]:
        """Flat name -> value of each output's mean parameters (empty for ZeroMean)."""
        out = {}
        for d, m in enumerate(self.means):
            prefix = f"output{d}." if self.num_outputs > 1 else ""
            out.update({prefix + name: v for name, v in m.hyperparameters().items()})
        return out


class _Objective:
    """-log p(x) / n_observed and its gradient, as an L-BFGS closure, counting evaluations.

    A trial step of the line search into degenerate values (a failed Cholesky factor, in
    the forward or the backward pass, or a non-finite likelihood) is rejected with a loss
    far above any seen, so that the strong Wolfe search steps back (a finite value: its
    cubic interpolation turns inf into NaN); at the very first evaluation such a failure
    is raised.
    """

    def __init__(self, gp: StateSpaceGP, t: Tensor, x: Tensor,
                 callback: Callable[[int, float], None] | None) -> None:
        self.gp, self.t, self.x, self.callback = gp, t, x, callback
        self.n_obs = int((~torch.isnan(gp.train_x)).sum())
        self.count, self.rejected = 0, _REJECTED_LOSS
        self.optimizer: torch.optim.Optimizer | None = None

    def __call__(self) -> Tensor:
        self.optimizer.zero_grad()
        self.count += 1
        try:
            lml = self.gp.log_marginal_likelihood(self.t, self.x)
            if not torch.isfinite(lml):
                raise DataError(f"log marginal likelihood became non-finite during fitting "
                                f"(evaluation {self.count}; hyperparameters "
                                f"{self.gp.hyperparameters()})")
            loss = -lml / self.n_obs
            # the backward pass factors matrices too (an engine's analytic gradient):
            # a failure there rejects the trial point like one in the forward pass
            loss.backward()
        except (torch.linalg.LinAlgError, DataError):
            if self.count == 1:
                raise
            self.optimizer.zero_grad()    # nothing of a failed backward pass is kept
            return torch.tensor(self.rejected, dtype=self.gp.log_noise_variance.dtype)
        self.rejected = max(self.rejected, 10 * abs(float(loss.detach())))
        if self.callback is not None:
            self.callback(self.count, float(lml.detach()))
        return loss
