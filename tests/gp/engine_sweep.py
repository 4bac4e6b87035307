"""Shared cases of the engine sweep: kernels of every family, sums and products, with
length-scales and periods from 1e-3 to 1e3 of the data span, noise 1e-8..1, on irregular
grids with long gaps; each engine's posterior against the dense GP (dynvae.gp.exact,
Gram matrix + Cholesky, no state space)."""

from __future__ import annotations

import itertools
import math

import torch

from dynvae.gp.exact import exact_log_marginal_likelihood, exact_posterior
from dynvae.gp.kernels import Matern12, Matern32, Matern52, Periodic, QuasiPeriodic
from dynvae.gp.regression import StateSpaceGP

DT = torch.float64
SPAN = 10.0


def gappy_grid(T: int, seed: int) -> torch.Tensor:
    """Readings every SPAN/(4T) with three gaps of 5-20 % of the span, scaled to SPAN."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.full((T - 1,), 1.0, dtype=DT) * (1 + 0.3 * torch.rand(T - 1, generator=g,
                                                                    dtype=DT))
    gaps = torch.randperm(T - 1, generator=g)[:3]
    dt[gaps] = T * (0.05 + 0.15 * torch.rand(3, generator=g, dtype=DT))
    t = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum(dt, 0)])
    return t * (SPAN / float(t[-1]))


def series(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Standardised smooth + periodic + rough signal, 10 % missing (NaN)."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.sin(2.1 * t) + 0.5 * torch.sin(17.0 * t) + 0.3 * torch.randn(len(t), generator=g,
                                                                             dtype=DT)
    x = (x - x.mean()) / x.std()
    x[torch.rand(len(t), generator=g) < 0.1] = float("nan")
    x[0] = 0.2
    return x


FAMILIES = ("matern12", "matern32", "matern52", "periodic", "quasiperiodic",
            "matern52+periodic", "matern32*periodic")


def make_kernel(family: str, scale: float, order: int = 4):
    """Kernel with every length-scale and period ``scale * SPAN``."""
    ell = scale * SPAN
    build = {
        "matern12": lambda: Matern12(ell, 0.7),
        "matern32": lambda: Matern32(ell, 1.3),
        "matern52": lambda: Matern52(ell, 0.9),
        # periodic length-scales are relative to the period; 170 as in the field report
        "periodic": lambda: Periodic(ell, 170.0 if scale > 1 else 0.8, 1.1, order=order),
        "quasiperiodic": lambda: QuasiPeriodic(ell, 1.0, 3 * ell, 0.8, order=order),
        "matern52+periodic": lambda: Matern52(ell, 0.6) + Periodic(2.8 * ell, 170.0, 0.5,
                                                                   order=order),
        "matern32*periodic": lambda: Matern32(ell, 1.1) * Periodic(0.3 * ell, 1.0, 1.0,
                                                                   order=order),
    }
    return build[family]()


SCALES = (1e-3, 1e-1, 1.0, 1e3)
NOISES = (1e-8, 1e-3, 1.0)


def all_cases():
    return list(itertools.product(FAMILIES, SCALES, NOISES))


def sample_cases(n: int, seed: int = 0):
    """A fixed spread of ``n`` cases: every family, scale and noise appears."""
    cases = all_cases()
    g = torch.Generator().manual_seed(seed)
    picked = [cases[i] for i in torch.randperm(len(cases), generator=g)[:n].tolist()]
    return sorted(picked)


def condition_number(kernel, t: torch.Tensor, x: torch.Tensor, noise: float) -> float:
    """cond(K + noise I) over the observed times: how much float64 rounding of the inputs
    alone moves the exact posterior (any float64 method, the dense one included)."""
    keep = ~torch.isnan(x)
    K = kernel.covariance(t[keep], t[keep]) + noise * torch.eye(int(keep.sum()), dtype=DT)
    ev = torch.linalg.eigvalsh(K)
    return float(ev[-1] / ev[0].clamp_min(1e-300))


def run_case(family: str, scale: float, noise: float, engines: dict, T: int = 60,
             seed: int = 0) -> tuple[dict, float]:
    """Per engine: (log-likelihood error, max mean error, max variance error) against the
    dense GP, relative to max(1, |log-lik|) and the prior standard deviation / variance
    of f, then (mean, variance) differences to the first engine; and cond(K + noise I)."""
    t = gappy_grid(T, seed)
    x = series(t, seed)
    kernel = make_kernel(family, scale)
    t_new = torch.unique(torch.cat([t, torch.linspace(-0.1 * SPAN, 1.1 * SPAN, 23, dtype=DT)]))
    with torch.no_grad():
        prior_var = float(kernel.stationary_covariance(torch.zeros(1, dtype=DT))[0])
        ref_ll = float(exact_log_marginal_likelihood(kernel, t, x, noise))
        ref_mean, ref_var = exact_posterior(kernel, t, x, noise, t_new)
        cond = condition_number(kernel, t, x, noise)
    out, preds = {}, {}
    for name, engine in engines.items():
        gp = StateSpaceGP(kernel, noise_variance=noise, engine=engine)
        gp.set_data(t, x)
        with torch.no_grad():
            ll = float(gp.log_marginal_likelihood(t, x))
            preds[name] = pred = gp.predict(t_new)
        out[name] = (abs(ll - ref_ll) / max(1.0, abs(ref_ll)),
                     float((pred.mean[:, 0] - ref_mean).abs().max()) / math.sqrt(prior_var),
                     float((pred.variance[:, 0] - ref_var).abs().max()) / prior_var)
    first = preds[next(iter(preds))]
    for name, pred in preds.items():
        out[name] += (float((pred.mean - first.mean).abs().max()) / math.sqrt(prior_var),
                      float((pred.variance - first.variance).abs().max()) / prior_var)
    return out, cond
