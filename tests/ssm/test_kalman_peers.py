"""Kalman filter/smoother against pykalman, filterpy and pykalman's robot reference data."""

import numpy as np
import pytest
import torch

from dynvae.ssm import LinearGaussianSSM, parallel_rts_smoother, rts_smoother
from tests.ssm.lgssm_cases import constant_model, pykalman_filter

pykalman = pytest.importorskip("pykalman")
pykalman_datasets = pytest.importorskip("pykalman.datasets")
filterpy_kalman = pytest.importorskip("filterpy.kalman")

SMOOTHERS = [rts_smoother, parallel_rts_smoother]


def as64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def model_and_data(T=25, seed=0):
    model = constant_model(S=3, D=2, seed=seed)
    x = torch.randn(T, 2, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
    return model, x


@pytest.mark.parametrize("smoother", SMOOTHERS)
def test_equals_pykalman_filter_smooth_loglikelihood(smoother):
    model, x = model_and_data()
    # pykalman's initial state is z_0, observed by x_0; its transition t maps z_t -> z_{t+1}
    kf = pykalman_filter(model)
    fm, fc = kf.filter(x.numpy())
    sm, sc = kf.smooth(x.numpy())
    out = smoother(model, x)
    torch.testing.assert_close(out.filtered.filtered_mean, as64(fm), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.filtered.filtered_cov, as64(fc), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.smoothed_mean, as64(sm), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.smoothed_cov, as64(sc), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.log_likelihood, torch.tensor(kf.loglikelihood(x.numpy()),
                                                                dtype=torch.float64),
                               rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("smoother", SMOOTHERS)
def test_equals_filterpy_predict_update_loop(smoother):
    model, x = model_and_data(seed=3)
    kf = filterpy_kalman.KalmanFilter(dim_x=3, dim_z=2)
    kf.x, kf.P = model.initial_mean.numpy().copy(), model.initial_cov.numpy().copy()
    kf.F, kf.Q = model.transition_matrix.numpy(), model.transition_cov.numpy()
    kf.H, kf.R = model.emission_matrix.numpy(), model.emission_cov.numpy()
    means, covs, pred_means, log_lik = [], [], [], 0.0
    for t in range(x.shape[0]):
        if t > 0:
            kf.predict()
        pred_means.append(kf.x.copy())
        kf.update(x[t].numpy())
        log_lik += kf.log_likelihood
        means.append(kf.x.copy())
        covs.append(kf.P.copy())
    sm, sc, _, _ = kf.rts_smoother(np.array(means), np.array(covs))
    out = smoother(model, x)
    torch.testing.assert_close(out.filtered.predicted_mean, as64(pred_means), rtol=1e-9,
                               atol=1e-10)
    torch.testing.assert_close(out.filtered.filtered_mean, as64(means), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.smoothed_mean, as64(sm), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.smoothed_cov, as64(sc), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.log_likelihood, torch.tensor(log_lik, dtype=torch.float64),
                               rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("smoother", SMOOTHERS)
def test_equals_pykalman_robot_reference_with_missing_observations(smoother):
    """pykalman ships filtered/smoothed moments of a 5-state robot model whose first
    observation vector (2 entries) is masked; transition offset k maps z_k -> z_{k+1}."""
    data = pykalman_datasets.load_robot()
    missing = np.ma.getmaskarray(data.observations)
    assert missing.sum() == 2
    T = data.observations.shape[0]
    offsets = torch.zeros(T, 5, dtype=torch.float64)
    offsets[1:] = as64(data.transition_offsets)              # our entry t maps z_{t-1} -> z_t
    model = LinearGaussianSSM(
        as64(data.initial_state_mean), as64(data.initial_state_covariance),
        as64(data.transition_matrix), as64(data.transition_covariance),
        as64(data.observation_matrix), as64(data.observation_covariance),
        transition_bias=offsets, emission_bias=as64(data.observation_offset),
        time_varying={"transition_bias"})
    x = as64(np.ma.filled(data.observations, np.nan))
    mask = torch.from_numpy(~missing)
    out = smoother(model, torch.nan_to_num(x), mask)
    torch.testing.assert_close(out.filtered.filtered_mean, as64(data.filtered_state_means),
                               rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(out.filtered.filtered_cov, as64(data.filtered_state_covariances),
                               rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(out.smoothed_mean, as64(data.smoothed_state_means),
                               rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(out.smoothed_cov, as64(data.smoothed_state_covariances),
                               rtol=1e-8, atol=1e-9)
