"""The latent SDE's Girsanov machinery against closed forms on Ornstein-Uhlenbeck
path measures (float64): the running-cost KL, log dP/dQ and its importance weight."""

import math

import torch

from dynvae.gaussian import diag_gaussian_log_prob
from dynvae.sde import BrownianPath, EulerMaruyama, GirsanovKL, GirsanovLogRatio, sdeint
from tests.reference.girsanov_oracles import ou_path_kl, ou_path_kl_euler

A, B_, SIGMA, Z0, T_END = 2.0, 0.5, 0.8, 1.5, 1.0
N_PATHS = 4000


def ou_pair(a=A, b=B_, sigma=SIGMA) -> GirsanovKL:
    """Posterior dz = -b z dt + sigma dW, prior dz = -a z dt + sigma dW."""
    return GirsanovKL(lambda t, z: -b * z, lambda t, z: -a * z,
                      lambda t, z: torch.full_like(z, sigma))


def z0(n=N_PATHS):
    return torch.full((n, 1), Z0, dtype=torch.float64)


def mean_and_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def test_running_cost_kl_matches_closed_form_and_bias_shrinks_with_dt():
    t = torch.tensor([0.0, 0.5, T_END], dtype=torch.float64)
    bm = BrownianPath(0.0, T_END, (N_PATHS, 1), seed=3)
    exact = ou_path_kl(A, B_, SIGMA, Z0, T_END)
    dts = (0.1, 0.05, 0.025, 0.0125)
    costs, errors = [], []
    with torch.no_grad():
        for dt in dts:
            cost = sdeint(ou_pair(), z0(), t, dt=dt, bm=bm).running_cost[:, -1]   # (K,)
            mean, se = mean_and_se(cost)
            # the Euler estimate is unbiased for the Euler chain's own expectation
            assert abs(mean - ou_path_kl_euler(A, B_, SIGMA, Z0, T_END, round(T_END / dt))) \
                < 4 * se
            costs.append(cost)
            errors.append(mean - exact)
    # one Brownian path for all step sizes: the bias (O(dt)) shrinks monotonically
    assert all(abs(e1) < abs(e0) for e0, e1 in zip(errors[:-1], errors[1:], strict=True))
    assert abs(errors[-1]) < 4 * se + abs(ou_path_kl_euler(A, B_, SIGMA, Z0, T_END, 80) - exact)
    # paired on the shared path, the coarse-minus-fine bias is resolved sharply
    diff, diff_se = mean_and_se(costs[0] - costs[-1])
    expected = ou_path_kl_euler(A, B_, SIGMA, Z0, T_END, 10) - \
        ou_path_kl_euler(A, B_, SIGMA, Z0, T_END, 80)
    assert abs(diff - expected) < 4 * diff_se < 0.25 * abs(expected)


def test_identical_drifts_give_exactly_zero_kl_and_log_ratio():
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    sde = ou_pair(a=B_)
    with torch.no_grad():
        cost = sdeint(sde, z0(50), t, dt=0.05).running_cost
        start = torch.cat([z0(50), torch.zeros(50, 1, dtype=torch.float64)], -1)
        log_ratio = sdeint(GirsanovLogRatio(sde), start, t, dt=0.05).z[..., -1]
    assert torch.equal(cost, torch.zeros_like(cost))
    assert torch.equal(log_ratio, torch.zeros_like(log_ratio))


def log_ratio_paths(t, dt, seed, n=N_PATHS, a=A, b=B_, sigma=SIGMA):
    start = torch.cat([z0(n), torch.zeros(n, 1, dtype=torch.float64)], -1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return sdeint(GirsanovLogRatio(ou_pair(a, b, sigma)), start, t, EulerMaruyama(), dt,
                      generator=gen).z                                           # (K, T, 2)


def test_importance_weight_has_mean_one_and_log_mean_minus_kl():
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    a, b, sigma = 1.0, 0.5, 1.0                               # KL about 0.13: light tails
    log_w = log_ratio_paths(t, 0.02, seed=4, a=a, b=b, sigma=sigma)[:, -1, 1]
    w_mean, w_se = mean_and_se(log_w.exp())
    assert abs(w_mean - 1.0) < 4 * w_se < 0.05                # E_Q[dP/dQ] = 1
    l_mean, l_se = mean_and_se(log_w)
    assert abs(-l_mean - ou_path_kl_euler(a, b, sigma, Z0, T_END, 50)) < 4 * l_se


def test_log_ratio_is_the_euler_transition_density_ratio():
    """l equals sum_k log N(z_{k+1} | z_k - a z_k h, s^2 h) - log N(. | z_k - b z_k h, .)
    recomputed from the path itself (every step is an output time)."""
    t = torch.linspace(0, T_END, 41, dtype=torch.float64)
    s = log_ratio_paths(t, None, seed=5, n=200)                                  # (K, 41, 2)
    z, h = s[..., 0], T_END / 40
    var = torch.full_like(z[:, 1:], SIGMA ** 2 * h)
    ratio = (diag_gaussian_log_prob(z[:, 1:], z[:, :-1] * (1 - A * h), var)
             - diag_gaussian_log_prob(z[:, 1:], z[:, :-1] * (1 - B_ * h), var)).cumsum(-1)
    torch.testing.assert_close(s[:, 1:, 1], ratio, rtol=0, atol=1e-10)
