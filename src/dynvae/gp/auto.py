"""Data-aware GP fitting: a kernel spec (or ``"auto"``) and the data in, a fitted GP out.

What ``dynvae gp`` and the forecast benchmark run. Every hyperparameter the spec leaves
open starts from the data (:func:`dynvae.gp.initialization.data_scales`): Matern
length-scales at the decorrelation time of the de-seasonalised series, periods at the
periodogram's peaks (after those given explicitly), the noise variance from second
differences, the prior variance split evenly over the terms of the sum. ``"auto"`` runs
the kernel search of :mod:`dynvae.gp.search`, each candidate (and the refit of the chosen
one on all the data, when the search ran on a window of it) with half the iterations
allowed (``max_iter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dynvae.errors import ConfigError
from dynvae.gp.inference import KalmanEngine
from dynvae.gp.initialization import DataScales, data_scales, find_periods
from dynvae.gp.kernels.registry import (
    KernelInit,
    count_periodic,
    kernel_spec,
    parse_kernel,
    split_spec,
)
from dynvae.gp.mean import MEANS
from dynvae.gp.regression import FitResult, StateSpaceGP
from dynvae.gp.search import Candidate, lengthscale_grid, scan_lengthscales, search_kernel


@dataclass(frozen=True)
class FitOptions:
    """What a data-aware fit may be told; None means 'from the data'."""

    kernel: str = "auto"
    periods: tuple[float, ...] = ()
    lengthscale: float | None = None
    noise: float | None = None
    order: int = 3
    mean: str | None = None          # None: chosen by the kernel search, else constant
    max_iter: int = 100
    tolerance: float = 1e-7          # per observation; see StateSpaceGP.fit


@dataclass
class DataFit:
    """A fitted GP, the spec of its fitted kernel, the data's scales, where each period
    came from, and the candidates of a kernel search (empty for a given spec)."""

    gp: StateSpaceGP
    spec: str
    fit: FitResult
    scales: DataScales
    period_sources: list[tuple[float, str]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)


def fit_to_data(t: Tensor, x: Tensor, options: FitOptions, engine: KalmanEngine,
                report: Callable[[str], None] | None = None,
                lml_offset: float = 0.0) -> DataFit:
    """Fit a GP to t (T,), x (T, D) (NaN = missing; standardise the values first).

    ``report(line)`` receives progress: one line per L-BFGS evaluation or per kernel-search
    candidate, with log marginal likelihoods shifted by ``lml_offset`` (e.g. the
    log-Jacobian of the standardisation, to report them on the original scale).
    """
    if options.mean is not None and options.mean not in MEANS:
        raise ConfigError(f"unknown mean {options.mean!r}; choose one of {list(MEANS)}")
    x = x[:, None] if x.ndim == 1 else x
    t_np, x_np = t.detach().cpu().numpy(), x.detach().cpu().numpy()
    scales = data_scales(t_np, x_np, harmonics=options.order)
    if options.noise is not None:
        scales = _replace(scales, noise_variance=options.noise)
    if options.lengthscale is not None:
        scales = _replace(scales, lengthscale=options.lengthscale)
    if options.kernel.strip().lower() == "auto":
        mean = None if options.mean is None else MEANS[options.mean]()
        if options.periods:
            scales = _replace(scales, periods=tuple(options.periods),
                              seasonal_fraction=(0.1,) * len(options.periods))
        result = search_kernel(t, x, scales, mean, engine, order=options.order,
                               max_iter=max(1, options.max_iter // 2),
                               tolerance=options.tolerance, report=report,
                               lml_offset=lml_offset)
        gp = result.gp
        with torch.no_grad():
            lml = float(gp.log_marginal_likelihood(t, x))
        n_eval = sum(c.n_evaluations for c in result.candidates)
        sources = [(p, "periodogram" if not options.periods else "given") for p in
                   scales.periods]
        return DataFit(gp, result.spec, FitResult(lml, n_eval), scales, sources,
                       result.candidates)
    mean = MEANS[options.mean or "constant"]()
    sources = resolve_periods(options.kernel, options.periods, t_np, x_np, scales, options.order)
    terms = len(split_spec(options.kernel))
    init = KernelInit(lengthscale=scales.lengthscale, variance=(1 - scales.noise_variance) / terms,
                      order=options.order, periods=tuple(p for p, _ in sources))
    gp = StateSpaceGP(parse_kernel(options.kernel, init), x.shape[1], scales.noise_variance,
                      engine, mean)
    gp.initialize_mean(t, x)
    if options.lengthscale is None:
        scan_lengthscales(gp, t, x, lengthscale_grid(scales.spacing, scales.span,
                                                     scales.lengthscale))
    progress = None if report is None else \
        (lambda n, lml: report(f"  evaluation {n:3d}: log marginal likelihood "
                               f"{lml + lml_offset:.3f}"))
    fit = gp.fit(t, x, max_iter=options.max_iter, tolerance=options.tolerance,
                 initialize_mean=False, callback=progress)
    return DataFit(gp, kernel_spec(gp.kernels[0]), fit, scales, sources)


def resolve_periods(spec: str, given: tuple[float, ...], t: np.ndarray, x: np.ndarray,
                    scales: DataScales, harmonics: int) -> list[tuple[float, str]]:
    """(period, source) for each periodic part of ``spec`` without a period of its own, in
    order: the given ones, then the periodogram's significant peaks, then its strongest
    local maxima, then a tenth of the span; a peak within 10% of a period taken already (or
    set in the spec) is skipped."""
    need = count_periodic(spec)
    taken = [dict(f.values)["period"] for term in split_spec(spec) for f in term
             if "period" in dict(f.values)]
    if len(given) > need:
        raise ConfigError(f"{len(given)} periods given but kernel {spec!r} has {need} "
                          "periodic part(s) without a period of their own")
    out = [(float(p), "given") for p in given]
    span = scales.span
    found = [(p, "periodogram") for p in scales.periods]
    if len(out) + len(found) < need:
        grid = np.arange(t[0], t[-1], scales.spacing)
        values = np.stack([np.interp(grid, t[np.isfinite(c)], c[np.isfinite(c)]) for c in x.T])
        found += [(p, "periodogram (weak peak)") for p in
                  find_periods(grid, values, need + len(taken), harmonics, force=True)]
    for p, source in found:
        if len(out) >= need:
            break
        if all(abs(p - q) > 0.1 * q for q in taken + [q for q, _ in out]):
            out.append((p, source))
    while len(out) < need:
        out.append((span / 10, "a tenth of the span"))
    return out


def _replace(scales: DataScales, **changes) -> DataScales:
    from dataclasses import replace
    return replace(scales, **changes)
