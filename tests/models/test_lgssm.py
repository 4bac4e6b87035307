"""LGSSM model: statsmodels' Nile local level, EM, dense-Gaussian oracle, save/load, errors."""

import numpy as np
import pytest
import torch

from dynvae import SequenceBatch
from dynvae.data import synthetic_lgssm
from dynvae.errors import ConfigError, DataError
from dynvae.models.lgssm import INFERENCE, LGSSM, Config
from dynvae.models.lgssm_fit import LBFGS
from dynvae.models.registry import model_class
from dynvae.ssm import rts_smoother
from dynvae.train.checkpoint import load_checkpoint, save_checkpoint
from tests.reference.dense_lgssm import joint_moments

sm = pytest.importorskip("statsmodels.api")


def nile_batch():
    y = sm.datasets.nile.load_pandas().data["volume"].to_numpy(np.float64)
    return y, SequenceBatch.from_tensor(torch.tensor(y)[None, :, None])


def set_local_level(model, level_var, irregular_var):
    model.transition_cov.assign(torch.tensor([[level_var]], dtype=torch.float64))
    model.emission_cov.assign(torch.tensor([[irregular_var]], dtype=torch.float64))


def test_log_likelihood_equals_statsmodels_at_identical_parameters():
    y, batch = nile_batch()
    peer = sm.tsa.UnobservedComponents(y, "local level")
    for irregular, level in [(15078.0, 1478.8), (9000.0, 3000.0)]:
        model = LGSSM.local_level()
        set_local_level(model, level, irregular)
        ours = float(model.log_likelihood(batch)[0].detach())
        assert abs(ours - peer.loglike(np.array([irregular, level]))) < 1e-8


def test_nile_local_level_mle_matches_statsmodels():
    y, batch = nile_batch()
    peer = sm.tsa.UnobservedComponents(y, "local level")
    default = peer.fit(disp=False)                       # sigma2s 15078, 1478.8; llf -632.538
    tight = peer.fit(disp=False, method="lbfgs", maxiter=1000, pgtol=1e-12, factr=1)
    model = LGSSM.local_level()
    model.initialize_from_data(batch)
    with torch.no_grad():
        start = float(model.log_likelihood(batch).sum())
    history = model.fit_gradient(batch, LBFGS(), steps=20, progress=False)
    # row 0 is the starting point (as for fit_em), so the curve shows the improvement
    assert history[0]["step"] == 0 and history[0]["log_likelihood"] == start
    assert [r["step"] for r in history] == list(range(len(history))) and len(history) >= 2
    llf = history[-1]["log_likelihood"]
    assert llf > start + 0.1                             # start -632.91: a moments fit
    assert abs(llf - default.llf) < 0.01
    assert llf >= default.llf - 1e-6                     # a maximum at least as high
    assert abs(llf - tight.llf) < 1e-4
    irregular, level = float(model.emission_cov().detach()), float(model.transition_cov().detach())
    np.testing.assert_allclose([irregular, level], tight.params, rtol=1e-3)
    np.testing.assert_allclose([irregular, level], default.params, rtol=0.011)


def random_lgssm(S=2, D=3, U=1, seed=0, diagonal=False):
    torch.manual_seed(seed)
    config = Config(state_dim=S, transition="linear", emission="linear", initial="learned",
                    diagonal_cov=diagonal, transition_bias=True, emission_bias=True)
    model = LGSSM(config, D, U)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_reconstruct_and_forecast_equal_dense_gaussian_oracle():
    S, D, U, T, K, B = 2, 3, 1, 6, 3, 2
    model = random_lgssm(S, D, U)
    x = torch.randn(B, T, D, dtype=torch.float64)
    mask = torch.rand(B, T, D) > 0.4
    mask[:, 0, 0] = True
    u = torch.randn(B, T + K, U, dtype=torch.float64)
    batch = SequenceBatch(x * mask, mask, torch.arange(T, dtype=torch.float64).expand(B, T),
                          torch.full((B,), T), u[:, :T])
    rec = model.reconstruct(batch)
    fc = model.forecast(batch, T - 1 + torch.arange(1, K + 1, dtype=torch.float64).expand(B, K),
                        u_future=u[:, T:])
    p = model.ssm()
    with torch.no_grad():
        for b in range(B):
            trans_off, emis_off = p.offsets(T + K, u[b])
            mz, Czz, mx, Cxx, Cxz = joint_moments(
                p.initial_mean, p.initial_cov, [p.transition_matrix] * (T + K),
                [p.transition_cov] * (T + K), [p.emission_matrix] * (T + K),
                [p.emission_cov] * (T + K), T + K, trans_off, emis_off)
            o = torch.cat([mask[b], torch.zeros(K, D, dtype=torch.bool)]).reshape(-1)
            xo = x[b].reshape(-1)[mask[b].reshape(-1)]
            gain = torch.linalg.solve(Cxx[o][:, o], Cxx[o]).T        # (n, n_obs)
            mean = (mx + gain @ (xo - mx[o])).reshape(T + K, D)
            cov_x = Cxx - gain @ Cxx[o]
            std = torch.diagonal(cov_x).clamp_min(0).sqrt().reshape(T + K, D)
            miss = ~mask[b]
            torch.testing.assert_close(rec.mean[b][miss], mean[:T][miss], rtol=1e-9, atol=1e-10)
            torch.testing.assert_close(rec.std[b][miss], std[:T][miss], rtol=1e-9, atol=1e-10)
            torch.testing.assert_close(fc.mean[b], mean[T:], rtol=1e-9, atol=1e-10)
            torch.testing.assert_close(fc.std[b], std[T:], rtol=1e-9, atol=1e-10)
            # observed entries: predictive of a fresh draw, H Cov(z | x) H^T + R
            cov_z = Czz - torch.linalg.solve(Cxx[o][:, o], Cxz[o]).T @ Cxz[o]
            H, R = p.emission_matrix, p.emission_cov
            var_rep = torch.stack([torch.diagonal(H @ cov_z[t * S:(t + 1) * S, t * S:(t + 1) * S]
                                                  @ H.T + R) for t in range(T)])
            torch.testing.assert_close(rec.std[b][mask[b]], var_rep.sqrt()[mask[b]], rtol=1e-9,
                                       atol=1e-10)
            torch.testing.assert_close(rec.mean[b][mask[b]], (cov_z.new_zeros(0).new_tensor(
                (mz + torch.linalg.solve(Cxx[o][:, o], Cxz[o]).T @ (xo - mx[o])).reshape(-1, S)[:T]
                .tolist()) @ H.T + emis_off[:T])[mask[b]], rtol=1e-9, atol=1e-10)


def test_forecast_time_grid_validation():
    model = LGSSM.local_level()
    batch = SequenceBatch.from_tensor(torch.randn(1, 5, 1, dtype=torch.float64),
                                      t=torch.arange(5, dtype=torch.float64) * 0.5)
    set_local_level(model, 1.0, 1.0)
    out = model.forecast(batch, torch.tensor([[2.5, 3.5]], dtype=torch.float64))
    assert out.mean.shape == (1, 2, 1)
    assert float(out.std[0, 1, 0].detach()) > float(out.std[0, 0, 0].detach())   # k=3 vs k=1
    with pytest.raises(DataError, match="discrete-time"):
        model.forecast(batch, torch.tensor([[2.3]], dtype=torch.float64))
    with pytest.raises(DataError, match="after its last time"):
        model.forecast(batch, torch.tensor([[1.0]], dtype=torch.float64))


def em_data(n=4, T=15, D=3, missing=0.3, seed=1):
    data = synthetic_lgssm(n=n, T=T, S=2, D=D, missing=missing, seed=seed)
    return data, data.dataset.to_batch(dtype=torch.float64)


@pytest.mark.parametrize("diagonal", [False, True])
def test_em_log_likelihood_never_decreases_with_missing_entries(diagonal):
    _, batch = em_data()
    u = torch.randn(batch.batch_size, batch.n_steps, 1, dtype=torch.float64)
    batch = SequenceBatch(batch.x, batch.mask, batch.t, batch.lengths, u)
    model = random_lgssm(2, 3, 1, seed=3, diagonal=diagonal)
    model.initialize_from_data(batch)
    lls = [row["log_likelihood"] for row in model.fit_em(batch, n_iter=8, tol=0,
                                                         progress=False)]
    diffs = np.diff(lls)
    assert (diffs >= -1e-8 * abs(lls[-1])).all(), diffs
    assert lls[-1] > lls[0] + 1.0


@pytest.mark.slow
def test_em_recovers_predictive_distribution_of_true_model():
    data = synthetic_lgssm(n=40, T=40, S=2, D=3, missing=0.2, seed=4)
    train = data.dataset[:32].to_batch(dtype=torch.float64)
    test = data.dataset[32:].to_batch(dtype=torch.float64)
    model = LGSSM(Config(state_dim=2, transition="linear", emission="linear",
                         initial="learned"), 3)
    model.initialize_from_data(train)
    model.fit_em(train, n_iter=500, tol=0, progress=False)          # EM converges slowly
    true = data.model
    true_ll = rts_smoother(true, test.x, test.mask).log_likelihood.sum()
    fitted_ll = model.log_likelihood(test).sum()
    n = float(test.mask.sum())
    assert abs(float(fitted_ll - true_ll)) / n < 0.02          # nats per observed entry
    # predictive moments of every entry agree (parameters only up to a similarity)
    oracle = LGSSM(Config(state_dim=2, transition="linear", emission="linear",
                          initial="learned"), 3)
    with torch.no_grad():
        oracle.transition.assign(true.transition_matrix)
        oracle.transition_cov.assign(true.transition_cov)
        oracle.emission.assign(true.emission_matrix)
        oracle.emission_cov.assign(true.emission_cov)
        oracle.initial.assign(true.initial_mean, true.initial_cov)
        truth, rec = oracle.reconstruct(test), model.reconstruct(test)
    rms = lambda v: float(v.pow(2).mean().sqrt())
    assert rms(rec.mean - truth.mean) < 0.1 * rms(truth.mean - truth.mean.mean((0, 1)))
    assert rms(rec.std / truth.std - 1) < 0.05


@pytest.mark.slow
def test_gradient_and_em_reach_the_same_maximum():
    _, batch = em_data(n=4, T=40, D=2, missing=0.2, seed=5)
    results = []
    for fit in ("em", "lbfgs"):
        model = LGSSM(Config(diagonal_cov=True), 2)        # local level per channel
        model.initialize_from_data(batch)
        if fit == "em":
            model.fit_em(batch, n_iter=300, tol=1e-10, progress=False)
        else:
            model.fit_gradient(batch, LBFGS(), steps=20, progress=False)
        results.append(float(model.log_likelihood(batch).sum()))
    assert abs(results[0] - results[1]) < 1e-4, results


def test_save_load_round_trip(tmp_path):
    _, batch = em_data(n=3, T=12)
    model = LGSSM(Config(state_dim=2, transition="linear", emission="linear",
                         initial="learned", transition_bias=True), 3)
    model.initialize_from_data(batch)
    model.fit_em(batch, n_iter=3, progress=False)
    save_checkpoint(tmp_path / "m.pt", {"config": vars(model.config), "state": model.state_dict()})
    payload = load_checkpoint(tmp_path / "m.pt")
    cls = model_class("lgssm")
    clone = cls.from_config(cls.Config(**payload["config"]), 3, 0)
    clone.load_state_dict(payload["state"])
    torch.testing.assert_close(clone.log_likelihood(batch), model.log_likelihood(batch))
    torch.testing.assert_close(clone.reconstruct(batch).std, model.reconstruct(batch).std)


def test_diffuse_model_samples_after_fitting_only():
    _, batch = nile_batch()
    model = LGSSM.local_level()
    with pytest.raises(ConfigError, match="diffuse"):
        model.sample(2, torch.arange(4.0))
    model.initialize_from_data(batch)
    model.fit_em(batch, n_iter=2, progress=False)
    draws = model.sample(3, torch.arange(7.0))
    assert draws.shape == (3, 7, 1) and torch.isfinite(draws).all()


def test_sample_moments_match_the_model():
    model = random_lgssm(S=2, D=2, U=0, seed=7)
    p = model.ssm()
    draws = model.sample(20000, torch.arange(3.0))                   # (n, 3, D)
    mean, cov = p.initial_mean, p.initial_cov
    for t in range(3):
        if t > 0:
            mean = p.transition_matrix @ mean + p.transition_bias
            cov = p.transition_matrix @ cov @ p.transition_matrix.T + p.transition_cov
        x_mean = p.emission_matrix @ mean + p.emission_bias
        x_var = torch.diagonal(p.emission_matrix @ cov @ p.emission_matrix.T + p.emission_cov)
        se = (x_var / 20000).sqrt()
        assert ((draws[:, t].mean(0) - x_mean).abs() < 5 * se).all()
        assert ((draws[:, t].var(0) / x_var - 1).abs() < 0.06).all()


def test_clear_errors():
    with pytest.raises(ConfigError, match="unknown transition"):
        LGSSM(Config(transition="spline"), 1)
    with pytest.raises(ConfigError, match="diffuse"):
        LGSSM(Config(emission="linear", state_dim=2), 3)
    with pytest.raises(ConfigError, match="state_dim == data dim"):
        LGSSM(Config(state_dim=2, initial="learned"), 3)
    # only state_dim changed from the defaults: one error naming every setting it needs,
    # and the settings it names build the model
    with pytest.raises(ConfigError, match="model.emission=linear --set model.initial=learned "
                                          r"\(and model.transition=linear"):
        LGSSM(Config(state_dim=4), 1)
    LGSSM(Config(state_dim=4, emission="linear", initial="learned", transition="linear"), 1)
    model = LGSSM.local_level()
    with pytest.raises(DataError, match="channels"):
        model.log_likelihood(SequenceBatch.from_tensor(torch.randn(1, 4, 2)))
    with_inputs = LGSSM(Config(), 1, input_dim=2)
    with pytest.raises(DataError, match="input channels"):
        with_inputs.log_likelihood(SequenceBatch.from_tensor(torch.randn(1, 4, 1)))


def test_parallel_inference_equals_sequential():
    _, batch = em_data(n=3, T=12, D=3, missing=0.3, seed=2)
    u = torch.randn(batch.batch_size, batch.n_steps, 1, dtype=torch.float64)
    batch = SequenceBatch(batch.x, batch.mask, batch.t, batch.lengths, u)
    models = [random_lgssm(2, 3, 1, seed=4) for _ in range(2)]
    models[0].inference = INFERENCE["sequential"]
    models[1].inference = INFERENCE["parallel"]
    outputs = []
    for model in models:
        model.fit_em(batch, n_iter=2, progress=False)
        rec = model.reconstruct(batch)
        outputs.append((model.log_likelihood(batch), rec.mean, rec.std))
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    _, nile = nile_batch()
    lls = []
    for inference in ("sequential", "parallel"):
        model = LGSSM(Config(inference=inference), 1)
        set_local_level(model, 1478.8, 15078.0)
        lls.append(float(model.log_likelihood(nile).detach()))
    assert abs(lls[0] - lls[1]) < 1e-6, lls


def test_missing_entry_moments_with_singular_observed_noise_block():
    # R = a a^T + b b^T, a = (1, 1, 1), b = (0, 0, 1): the observed block R_oo of
    # entries 0, 1 is singular (a fitted R on the boundary). Both observed entries
    # equal the a-component e_a, so x_2 | x_0, x_1 = e_a + e_b: mean (x_0 + x_1) / 2, var 1.
    from dynvae.models.lgssm_em import missing_entry_moments
    a = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    b = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    R = torch.outer(a, a) + torch.outer(b, b)
    H = torch.eye(3, dtype=torch.float64)
    x = torch.tensor([[[0.7, 0.7, float("nan")]]], dtype=torch.float64)
    mask = torch.tensor([[[True, True, False]]])
    L, ell, E = missing_entry_moments(torch.nan_to_num(x), mask, torch.zeros_like(x), H, R)
    assert torch.isfinite(L).all() and torch.isfinite(ell).all() and torch.isfinite(E).all()
    assert torch.allclose(ell[0, 0], torch.tensor([0.7, 0.7, 0.7], dtype=torch.float64))
    assert torch.allclose(L[0, 0, 2], torch.tensor([-0.5, -0.5, 1.0], dtype=torch.float64))
    assert abs(float(E[0, 0, 2, 2]) - 1.0) < 1e-12
    assert float(E[0, 0, :2].abs().max()) == 0.0


def test_gradient_fit_into_degenerate_covariances_is_a_clear_error():
    # two observed steps of two identical channels: the likelihood is unbounded and the
    # L-BFGS line search reaches covariances that are not positive definite
    nan = float("nan")
    x = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [nan, nan], [nan, nan]]], dtype=torch.float64)
    model = LGSSM(Config(), data_dim=2)
    batch = SequenceBatch.from_tensor(x)
    model.initialize_from_data(batch)
    with pytest.raises(DataError, match="positive definite"):
        model.fit_gradient(batch, LBFGS(), steps=100, progress=False)


def test_a_fit_with_progress_writes_plain_lines_where_no_bar_is_drawn(capsys, monkeypatch):
    """Standard error that is not a terminal (a log, captured output) gets no bar
    redraws (no carriage returns), but a plain status line at least every LINE_SECONDS
    and one at the end of the fit (EM here; the gradient fits share the bar)."""
    from dynvae.models import lgssm_fit
    monkeypatch.setattr(lgssm_fit._FitBar, "LINE_SECONDS", 0.0)      # a line every step
    _, batch = em_data()
    u = torch.randn(batch.batch_size, batch.n_steps, 1, dtype=torch.float64)
    batch = SequenceBatch(batch.x, batch.mask, batch.t, batch.lengths, u)
    model = random_lgssm(2, 3, 1, seed=3, diagonal=True)
    model.fit_em(batch, n_iter=3, tol=0, progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) >= 3
    assert all(ln.startswith("EM: step ") and "log-lik/entry" in ln for ln in lines)
    assert lines[-1].startswith("EM: step 3,")
    model.fit_em(batch, n_iter=3, tol=0, progress=False)
    assert capsys.readouterr().err == ""
