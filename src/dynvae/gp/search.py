"""Kernel search: a greedy walk over sums of Matern, periodic and quasi-periodic kernels.

A small version of the compositional search of Duvenaud et al. (2013, "Structure discovery
in nonparametric regression through compositional kernel search") and Lloyd et al. (2014):
each step fits the candidates that extend the current kernel by one part, warm-started
from the current kernel's fitted hyperparameters (the new part starts from the data's
scales, :mod:`dynvae.gp.initialization`), and keeps the best if it lowers the Bayesian
information criterion BIC = -2 log p(y | theta_hat) + k log n (k free parameters, n
observed values; Schwarz 1978), a linear prior mean needing a BIC lower by 10 more
(:func:`score`). The grammar:

1. one Matern: 1/2, 3/2 or 5/2 (length-scale: the data's decorrelation time), each with a
   constant and a linear prior mean unless the mean is given (:mod:`dynvae.gp.mean`);
2. for each period the periodogram finds (strongest first): + periodic(P), or
   + quasiperiodic(P) (a Matern-3/2 envelope: a cycle whose shape drifts), or neither;
3. + a Matern-1/2 or 3/2 (departures at another time scale, e.g. weather around a smooth
   trend, or correlated noise), its length-scale started at the best of a log-spaced grid;
4. the other prior mean (constant or linear) with the kernel chosen, unless it is given.

The search may run on the last ``max_points`` observations only (enough for the short
scales; periods longer than a third of that window are not tried); the chosen kernel is
then refitted on all the data from the window's hyperparameters.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dynvae.errors import DataError
from dynvae.gp.inference import KalmanEngine
from dynvae.gp.initialization import DataScales
from dynvae.gp.kernels import Matern, Matern12, Matern32, Matern52, Periodic, QuasiPeriodic, Sum
from dynvae.gp.kernels.base import Kernel
from dynvae.gp.kernels.registry import kernel_spec
from dynvae.gp.mean import ConstantMean, LinearMean, MeanFunction
from dynvae.gp.regression import StateSpaceGP


@dataclass(frozen=True)
class Candidate:
    """One fitted candidate: its fitted spec, score and cost."""

    spec: str
    mean: str
    log_marginal_likelihood: float
    n_parameters: int
    bic: float
    n_evaluations: int
    seconds: float


@dataclass
class SearchResult:
    """The chosen, fitted GP (on all the data) and every candidate tried, in order."""

    gp: StateSpaceGP
    spec: str
    candidates: list[Candidate]


def bic(log_marginal_likelihood: float, n_parameters: int, n_observed: int) -> float:
    """Schwarz's criterion: -2 log L + k log n (lower is better)."""
    return -2.0 * log_marginal_likelihood + n_parameters * math.log(n_observed)


def search_kernel(t: Tensor, x: Tensor, scales: DataScales, mean: MeanFunction | None,
                  engine: KalmanEngine, order: int = 3, max_iter: int = 50,
                  max_points: int | None = 2000, tolerance: float = 1e-7,
                  report: Callable[[str], None] | None = None,
                  lml_offset: float = 0.0) -> SearchResult:
    """Choose a kernel for t (T,), x (T, D) (NaN missing; standardised values) by BIC.

    ``scales``: :func:`dynvae.gp.initialization.data_scales` of the data. ``mean``: the
    prior mean of every candidate, or None to choose between a constant and a linear one
    in the first step. ``max_iter``: L-BFGS iterations per candidate and for the final
    refit on all the data when the search ran on a window; ``tolerance`` as in
    :meth:`StateSpaceGP.fit`.
    ``report(line)`` receives one line per fitted candidate, its log marginal likelihood
    and BIC shifted by ``lml_offset`` (which changes no comparison).
    """
    x = x[:, None] if x.ndim == 1 else x
    window = slice(None) if max_points is None or len(t) <= max_points else \
        slice(len(t) - max_points, None)
    tw, xw = t[window], x[window]
    n_obs = int((~torch.isnan(xw)).sum())
    span = float(tw[-1] - tw[0])
    tried: list[Candidate] = []

    def fit(gp: StateSpaceGP, warm: bool) -> tuple[StateSpaceGP, Candidate]:
        start = time.perf_counter()
        result = gp.fit(tw, xw, max_iter=max_iter, tolerance=tolerance,
                        initialize_mean=not warm)
        k = sum(p.numel() for p in gp.parameters() if p.requires_grad)
        cand = Candidate(kernel_spec(gp.kernels[0]), type(gp.means[0]).__name__,
                         result.log_marginal_likelihood, k,
                         bic(result.log_marginal_likelihood, k, n_obs), result.n_evaluations,
                         time.perf_counter() - start)
        tried.append(cand)
        if report is not None:
            report(f"  BIC {cand.bic - 2 * lml_offset:12.2f}  log marginal likelihood "
                   f"{cand.log_marginal_likelihood + lml_offset:12.2f}  "
                   f"({cand.n_evaluations} evaluations, "
                   f"{cand.seconds:.1f} s)  {cand.spec}, {cand.mean}")
        return gp, cand

    noise = scales.noise_variance
    best = None
    means = [mean] if mean is not None else [ConstantMean(), LinearMean()]
    grid = lengthscale_grid(scales.spacing, span, scales.lengthscale)
    for cls in (Matern12, Matern32, Matern52):
        for m in means:
            gp = StateSpaceGP(cls(scales.lengthscale, 1.0 - noise), x.shape[1], noise, engine,
                              copy.deepcopy(m))
            gp.initialize_mean(tw, xw)
            scan_lengthscales(gp, tw, xw, grid)
            best = _better(best, fit(gp, warm=True))
    for period, fraction in zip(scales.periods, scales.seasonal_fraction, strict=True):
        if period > span / 3:
            continue
        variance = max(fraction, 0.05)
        parts = (Periodic(period, 1.0, variance, order),
                 QuasiPeriodic(period, 1.0, 5 * period, variance, order))
        step = None
        for part in parts:
            step = _better(step, fit(_extend(best[0], part), warm=True))
        best = _better(best, step)
    step = None
    for cls in (Matern12, Matern32):      # small variance: the parent's fit is the start
        gp = _extend(best[0], cls(scales.lengthscale, 0.05))
        scan_lengthscales(gp, tw, xw, grid, [k.kernels[-1] for k in gp.kernels])
        step = _better(step, fit(gp, warm=True))
    best = _better(best, step)
    if mean is None:                      # the other mean, with the kernel now chosen
        other = ConstantMean() if isinstance(best[0].means[0], LinearMean) else LinearMean()
        gp = _copy(best[0], other)
        gp.initialize_mean(tw, xw)
        best = _better(best, fit(gp, warm=True))
    gp = best[0]
    if window != slice(None):
        gp.fit(t, x, max_iter=max_iter, tolerance=tolerance, initialize_mean=False)
    return SearchResult(gp, kernel_spec(gp.kernels[0]), tried)


def lengthscale_grid(spacing: float, span: float, data_scale: float, n: int = 8
                     ) -> list[float]:
    """Matern length-scales to start from: ``n`` log-spaced from 3 steps to half the span,
    and the data's decorrelation time."""
    low, high = 3 * spacing, max(span / 2, 6 * spacing)
    return sorted({*(low * (high / low) ** (i / (n - 1)) for i in range(n)), data_scale})


def scan_lengthscales(gp: StateSpaceGP, t: Tensor, x: Tensor, candidates: list[float],
                      parts: list[Matern] | None = None) -> float:
    """Set the length-scale of ``parts`` (default: every Matern part of gp's kernels, itself
    or a term of its sum) to the candidate of highest log marginal likelihood, evaluated
    without gradients (the likelihood is multimodal in it: from a far too smooth start
    L-BFGS explains the data as noise). Returns the value chosen."""
    if parts is None:
        parts = [k for kernel in gp.kernels
                 for k in (kernel.kernels if isinstance(kernel, Sum) else [kernel])
                 if isinstance(k, Matern)]
    if not parts:
        return math.nan
    scores = {}
    for ell in candidates:
        with torch.no_grad():
            for k in parts:
                k.log_lengthscale.fill_(math.log(ell))
            try:
                scores[ell] = float(gp.log_marginal_likelihood(t, x))
            except (torch.linalg.LinAlgError, DataError):
                continue
    best = max(scores, key=lambda ell: scores[ell] if math.isfinite(scores[ell]) else -math.inf,
               default=candidates[0])
    with torch.no_grad():
        for k in parts:
            k.log_lengthscale.fill_(math.log(best))
    return best


def _better(current, challenger):
    """The (gp, candidate) pair with the lower score (the challenger when there is none)."""
    if current is None or score(challenger[1]) < score(current[1]):
        return challenger
    return current


def score(candidate: Candidate) -> float:
    """BIC, plus ``TREND_EVIDENCE`` for a linear prior mean: a trend is extrapolated
    without end, so it is kept on very strong evidence only (a BIC difference over 10,
    Kass and Raftery 1995), e.g. not for the fall of a seasonal series over a few weeks."""
    return candidate.bic + (TREND_EVIDENCE if candidate.mean == "LinearMean" else 0.0)


TREND_EVIDENCE = 10.0


def _extend(gp: StateSpaceGP, part: Kernel) -> StateSpaceGP:
    """A new GP whose every output's kernel is gp's fitted one plus ``part``, with gp's
    noise and mean (warm start); the engine is shared."""
    new = _copy(gp)
    for d in range(gp.num_outputs):
        new.kernels[d] = Sum(new.kernels[d], copy.deepcopy(part))
    return new


def _copy(gp: StateSpaceGP, mean: MeanFunction | None = None) -> StateSpaceGP:
    """A new GP with copies of gp's fitted kernels and noise, and of its means (or of
    ``mean`` for every output); the engine is shared."""
    new = StateSpaceGP(copy.deepcopy(gp.kernels[0]), gp.num_outputs, 1.0, gp.engine,
                       copy.deepcopy(mean or gp.means[0]))
    for d in range(gp.num_outputs):
        new.kernels[d] = copy.deepcopy(gp.kernels[d])
        new.means[d] = copy.deepcopy(mean or gp.means[d])
    with torch.no_grad():
        new.log_noise_variance.copy_(gp.log_noise_variance)
    return new
