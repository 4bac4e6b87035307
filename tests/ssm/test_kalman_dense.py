"""Sequential Kalman filter and RTS smoother against dense joint-Gaussian conditioning."""

import torch

from dynvae.ssm import LinearGaussianSSM, kalman_filter, rts_smoother
from tests.reference.dense_lgssm import condition, joint_moments


def random_model(S=3, D=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = 0.5 * torch.randn(S, S, generator=g, dtype=dtype)
    Lq = torch.randn(S, S, generator=g, dtype=dtype)
    Lr = torch.randn(D, D, generator=g, dtype=dtype)
    return LinearGaussianSSM(
        initial_mean=torch.randn(S, generator=g, dtype=dtype),
        initial_cov=torch.eye(S, dtype=dtype) * 1.5,
        transition_matrix=A, transition_cov=Lq @ Lq.T + 0.1 * torch.eye(S, dtype=dtype),
        emission_matrix=torch.randn(D, S, generator=g, dtype=dtype),
        emission_cov=Lr @ Lr.T + 0.1 * torch.eye(D, dtype=dtype))


def test_filter_smoother_equal_dense_conditioning_with_partial_masks():
    S, D, T, B = 3, 2, 7, 5
    model = random_model(S, D)
    x = torch.randn(B, T, D, dtype=torch.float64)
    mask = torch.rand(B, T, D) > 0.35
    mask[:, 0, 0] = True
    sm = rts_smoother(model, x, mask)
    mz, Czz, mx, Cxx, Cxz = joint_moments(
        model.initial_mean, model.initial_cov, [model.transition_matrix] * T,
        [model.transition_cov] * T, [model.emission_matrix] * T, [model.emission_cov] * T, T)
    for b in range(B):
        ll, mean, cov, cross = condition(mz, Czz, mx, Cxx, Cxz, x[b], mask[b], S)
        torch.testing.assert_close(sm.log_likelihood[b], ll, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sm.smoothed_mean[b], mean, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(sm.smoothed_cov[b], cov, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(sm.smoothed_cross_cov[b, 1:], cross, rtol=1e-9, atol=1e-10)


def test_filtered_last_step_equals_smoothed_last_step():
    model = random_model()
    x = torch.randn(2, 9, 2, dtype=torch.float64)
    f = kalman_filter(model, x)
    s = rts_smoother(model, x, filtered=f)
    torch.testing.assert_close(f.filtered_mean[:, -1], s.smoothed_mean[:, -1])
    assert not torch.allclose(f.filtered_mean[:, 0], s.smoothed_mean[:, 0])


def test_batch_dims_on_the_transition_only_broadcast_like_expanded_data():
    """A batch of transition matrices with unbatched data and initial state: the outputs
    take the parameter's batch shape and equal running each member separately."""
    S, D, T = 2, 1, 6
    base = random_model(S, D)
    scales = torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64)
    A = base.transition_matrix * scales[:, None, None]                     # (3, S, S)
    batched = LinearGaussianSSM(base.initial_mean, base.initial_cov, A, base.transition_cov,
                                base.emission_matrix, base.emission_cov)
    x = torch.randn(T, D, dtype=torch.float64)
    sm = rts_smoother(batched, x)
    assert sm.log_likelihood.shape == (3,)
    assert sm.smoothed_mean.shape == (3, T, S)
    for i in range(3):
        one = LinearGaussianSSM(base.initial_mean, base.initial_cov, A[i], base.transition_cov,
                                base.emission_matrix, base.emission_cov)
        ref = rts_smoother(one, x)
        torch.testing.assert_close(sm.log_likelihood[i], ref.log_likelihood)
        torch.testing.assert_close(sm.smoothed_mean[i], ref.smoothed_mean)
