"""Independent oracle for the GP-VAE: dense Gaussian algebra in NumPy/SciPy on the full
Gram matrix (scikit-learn's kernels), no state space and no torch."""

from __future__ import annotations

import numpy as np
from scipy.stats import multivariate_normal

from tests.reference.dense_gp import sklearn_kernel


def gram(kernel, t: np.ndarray) -> np.ndarray:
    """k(t_i, t_j) (n, n) from the scikit-learn equivalent of a dynvae kernel."""
    return sklearn_kernel(kernel)(np.asarray(t, dtype=np.float64)[:, None])


def site_posterior(K: np.ndarray, sites: np.ndarray, y: np.ndarray, v: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean (n,) and covariance (n, n) of z ~ N(0, K) given y_i = z_{sites_i} + N(0, v_i)."""
    Ks = K[:, sites]                                                  # (n, m)
    G = K[np.ix_(sites, sites)] + np.diag(v)
    mean = Ks @ np.linalg.solve(G, y)
    cov = K - Ks @ np.linalg.solve(G, Ks.T)
    return mean, 0.5 * (cov + cov.T)


def site_log_marginal(K: np.ndarray, sites: np.ndarray, y: np.ndarray, v: np.ndarray
                      ) -> float:
    """log N(y | 0, K_ss + diag v)."""
    G = K[np.ix_(sites, sites)] + np.diag(v)
    return float(multivariate_normal(np.zeros(len(y)), G).logpdf(y))


def gaussian_kl(mean_q: np.ndarray, cov_q: np.ndarray, cov_p: np.ndarray) -> float:
    """KL(N(mean_q, cov_q) || N(0, cov_p)) by dense algebra."""
    n = len(mean_q)
    _, logdet_p = np.linalg.slogdet(cov_p)
    _, logdet_q = np.linalg.slogdet(cov_q)
    trace = np.trace(np.linalg.solve(cov_p, cov_q))
    quad = mean_q @ np.linalg.solve(cov_p, mean_q)
    return 0.5 * (trace + quad - n + logdet_p - logdet_q)


def linear_gaussian_log_marginal(K: np.ndarray, x: np.ndarray, mask: np.ndarray,
                                 w: np.ndarray, b: np.ndarray, noise: np.ndarray) -> float:
    """log p(x_observed) for x_{t,d} = w_d z_t + b_d + N(0, noise_d), z ~ N(0, K) (T, T).

    x, mask: (T, D); w, b, noise: (D,). Covariance of vec(x) is (w w^T) (x) K + noise."""
    T, D = x.shape
    cov = np.kron(np.outer(w, w), K) + np.kron(np.diag(noise), np.eye(T))   # (D T, D T)
    mean = np.repeat(b, T)
    obs = mask.T.reshape(-1)                                          # d-major like kron
    values = x.T.reshape(-1)
    return float(multivariate_normal(mean[obs], cov[np.ix_(obs, obs)]).logpdf(values[obs]))
