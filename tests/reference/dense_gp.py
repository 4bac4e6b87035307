"""Independent oracle: GP regression by scikit-learn's GaussianProcessRegressor with the
same kernel and noise as a dynvae kernel (no state space, no torch)."""

from __future__ import annotations

import numpy as np


def sklearn_kernel(kernel):
    """The scikit-learn kernel equal to a dynvae Matern / Periodic / QuasiPeriodic / Sum /
    Product kernel (periodic kernels are compared at a truncation-free order)."""
    from sklearn.gaussian_process import kernels as sk

    from dynvae.gp.kernels import Matern, Periodic, Product, Sum

    if isinstance(kernel, Sum):
        out = sklearn_kernel(kernel.kernels[0])
        for k in kernel.kernels[1:]:
            out = out + sklearn_kernel(k)
        return out
    if isinstance(kernel, Product):
        return sklearn_kernel(kernel.left) * sklearn_kernel(kernel.right)
    fixed = "fixed"
    kernel = kernel.requires_grad_(False)
    if isinstance(kernel, Matern):
        base = sk.Matern(length_scale=float(kernel.lengthscale), nu=kernel.order + 0.5,
                         length_scale_bounds=fixed)
    elif isinstance(kernel, Periodic):
        base = sk.ExpSineSquared(length_scale=float(kernel.lengthscale),
                                 periodicity=float(kernel.period),
                                 length_scale_bounds=fixed, periodicity_bounds=fixed)
    else:
        raise TypeError(f"no scikit-learn equivalent for {type(kernel).__name__}")
    return sk.ConstantKernel(float(kernel.variance), constant_value_bounds=fixed) * base


def sklearn_gp(kernel, t, y, noise_variance, t_new):
    """(log marginal likelihood, latent mean (N,), latent variance (N,)) from scikit-learn,
    on the observed (non-NaN) entries of y."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    t, y, t_new = (np.asarray(a, dtype=np.float64) for a in (t, y, t_new))
    keep = ~np.isnan(y)
    gpr = GaussianProcessRegressor(sklearn_kernel(kernel), alpha=noise_variance, optimizer=None,
                                   normalize_y=False)
    gpr.fit(t[keep, None], y[keep])
    mean, std = gpr.predict(t_new[:, None], return_std=True)
    return gpr.log_marginal_likelihood_value_, mean, std ** 2
