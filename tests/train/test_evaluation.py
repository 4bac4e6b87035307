"""Held-out predictive scores are computed in the model's observation family: the
Bernoulli negative log-likelihood for Bernoulli observations (named ..._bernoulli_nll),
the Gaussian one otherwise, each against torch.distributions on identical predictions."""

import numpy as np
import torch
from torch.distributions import Bernoulli, Normal

from dynvae.data import Sequence, SequenceDataset, Standardizer
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.train.evaluation import (
    EvalSettings,
    evaluate_model,
    forecast_metrics,
    hide_entries,
    imputation_metrics,
    split_history,
)

SMALL = dict(latent_dim=2, encoder_hidden=5, transition_hidden=(5,), emission_hidden=(5,),
             n_predict_samples=8)


def dataset(binary: bool, n: int = 4, T: int = 8, D: int = 3) -> SequenceDataset:
    rng = np.random.default_rng(0)
    seqs = []
    for i in range(n):
        x = rng.normal(size=(T, D))
        x = (x > 0).astype(float) if binary else x
        x[rng.random((T, D)) < 0.1] = np.nan
        x[0] = 1.0
        seqs.append(Sequence(np.arange(T, dtype=float), x, None, f"s{i}"))
    return SequenceDataset(seqs, [f"c{d}" for d in range(D)])


def model(observation: str) -> DeepKalmanFilter:
    torch.manual_seed(0)
    return DeepKalmanFilter(DKFConfig(observation=observation, **SMALL), 3).double()


def identity(data: SequenceDataset) -> Standardizer:
    return Standardizer(np.zeros(data.dim), np.ones(data.dim), data.feature_names)


def imputation_reference(m, data, family):
    batch = data.to_batch(dtype=torch.float64)
    hidden = hide_entries(batch, 0.3, 1)
    torch.manual_seed(5)
    pred = m.reconstruct(batch.with_mask(batch.mask & ~hidden))
    if family == "bernoulli":
        lp = Bernoulli(probs=pred.mean.clamp(1e-7, 1 - 1e-7)).log_prob(batch.x)
    else:
        lp = Normal(pred.mean, pred.std).log_prob(batch.x)
    return float(-lp[hidden].mean())


def test_bernoulli_models_report_the_bernoulli_nll_of_hidden_entries():
    m, data = model("bernoulli"), dataset(binary=True)
    torch.manual_seed(5)
    out = imputation_metrics(m, data, identity(data), 0.3, 1)
    assert "test_imputation_nll" not in out
    want = imputation_reference(m, data, "bernoulli")
    assert abs(out["test_imputation_bernoulli_nll"] - want) < 1e-12


def test_gaussian_models_keep_the_gaussian_nll():
    m, data = model("gaussian"), dataset(binary=False)
    torch.manual_seed(5)
    out = imputation_metrics(m, data, identity(data), 0.3, 1)
    assert "test_imputation_bernoulli_nll" not in out
    assert abs(out["test_imputation_nll"] - imputation_reference(m, data, "gaussian")) < 1e-12


def test_bernoulli_forecast_scores_observed_future_entries():
    m, data = model("bernoulli"), dataset(binary=True)
    torch.manual_seed(2)
    out = forecast_metrics(m, data, identity(data), 2)
    assert {k for k in out if not k.startswith("baseline_")} == {
        "forecast_mse", "forecast_bernoulli_nll", "forecast_horizon"}
    past, fut = split_history(data, 2)
    torch.manual_seed(2)
    t_future = torch.tensor(np.stack([f[0] for f in fut]), dtype=torch.float64)
    p = m.forecast(past.to_batch(dtype=torch.float64), t_future).mean
    x = torch.tensor(np.stack([f[1] for f in fut]))
    seen = ~torch.isnan(x)
    lp = Bernoulli(probs=p.clamp(1e-7, 1 - 1e-7)).log_prob(torch.nan_to_num(x))
    assert abs(out["forecast_bernoulli_nll"] - float(-lp[seen].mean())) < 1e-12


def test_evaluate_model_names_every_predictive_score_by_family():
    data = dataset(binary=True)
    keys = set(evaluate_model(model("bernoulli"), data, identity(data), EvalSettings()))
    assert {"test_imputation_bernoulli_nll", "forecast_bernoulli_nll"} <= keys
    assert not {"test_imputation_nll", "forecast_nll"} & keys


class _Overflowing(DeepKalmanFilter):
    """A DKF whose predictive mean overflows at step 5, feature 1 of sequence s2 (a
    prediction that is not finite must raise, not be scored or written)."""

    def _spoil(self, pred, ids):
        mean = pred.mean.clone()
        for b, sid in enumerate(ids):
            if sid == "s2":
                mean[b, min(5, mean.shape[1] - 1), 1] = float("inf")
        return pred._replace(mean=mean)

    def reconstruct(self, batch):
        return self._spoil(super().reconstruct(batch), self.ids)

    def forecast(self, batch, t_future, u_future=None):
        return self._spoil(super().forecast(batch, t_future, u_future), self.ids)


def test_non_finite_predictions_raise_naming_the_sequence_step_and_feature(tmp_path):
    import pytest

    from dynvae.commands.report import predictions
    from dynvae.errors import NumericalError
    data = dataset(binary=False)
    std = Standardizer().fit(data)
    torch.manual_seed(0)
    bad = _Overflowing(DKFConfig(**SMALL), 3).double()
    bad.ids = data.ids                       # every call below sees all four sequences
    message = r"_Overflowing.reconstruct: non-finite predictive mean for sequence 's2' " \
              r"at step 5 \(t = 5\), feature 1"
    with pytest.raises(NumericalError, match=message):
        imputation_metrics(bad, std.transform(data), std, 0.5, 0)
    with pytest.raises(NumericalError, match=message):
        predictions(bad, std.transform(data), std)
    with pytest.raises(NumericalError, match=r"_Overflowing.forecast: .* sequence 's2'"):
        forecast_metrics(bad, std.transform(data), std, 2)
    bad.ids = ["s0", "s1", "s3", "s4"]       # the same model without the overflow: scores
    assert np.isfinite(imputation_metrics(bad, std.transform(data), std, 0.5, 0)[
        "test_imputation_mse"])


def test_baselines_are_scored_on_the_models_entries_and_reported_with_a_verdict():
    """The baseline metrics use exactly the entries the model is scored on (checked
    against np.interp and hand-made forecasts on the same hidden entries and held-out
    steps); seasonal-naive finds the period of a period-6 signal and is exact on it;
    baseline_lines gives the verdict against the best baseline."""
    from dynvae.train.evaluation import baseline_lines
    T, n = 60, 5
    t = np.arange(T, dtype=float)
    line = SequenceDataset([Sequence(t, (2.0 * t + k)[:, None], None, f"l{k}")
                            for k in range(n)], ["x"])
    std = Standardizer(np.array([50.0]), np.array([3.0]), ["x"])
    m = DeepKalmanFilter(DKFConfig(**SMALL), 1).double()
    out = imputation_metrics(m, line, std, 0.2, 0)
    hidden = hide_entries(line.to_batch(dtype=torch.float64), 0.2, 0).numpy()[..., 0]
    truth = np.stack([50.0 + 3.0 * s.x[:, 0] for s in line])           # original scale
    linear = np.stack([np.interp(t, t[~h], x[~h]) for h, x in zip(hidden, truth, strict=True)])
    assert np.isclose(out["baseline_imputation_mse_linear"],
                      ((linear - truth) ** 2)[hidden].mean(), rtol=1e-12)
    assert np.isclose(out["baseline_imputation_mse_mean"],
                      ((truth - 50.0) ** 2)[hidden].mean(), rtol=1e-12)
    wave = SequenceDataset([Sequence(t, np.sin(2 * np.pi * (t + k) / 6)[:, None], None,
                                     f"w{k}") for k in range(n)], ["x"])
    fc = forecast_metrics(m, wave, identity(wave), 6)
    assert fc["baseline_forecast_season"] == 6
    assert fc["baseline_forecast_mse_seasonal_naive"] < 1e-28
    future = np.stack([s.x[-6:, 0] for s in wave])
    last = np.stack([np.full(6, s.x[-7, 0]) for s in wave])
    assert np.isclose(fc["baseline_forecast_mse_mean"], (future ** 2).mean(), rtol=1e-12)
    assert np.isclose(fc["baseline_forecast_mse_naive"], ((future - last) ** 2).mean(),
                      rtol=1e-12)
    best = out["baseline_imputation_mse_linear"]
    imputed, forecast = baseline_lines({**out, **fc, "test_imputation_mse": 2 * best,
                                        "forecast_mse": fc["baseline_forecast_mse_seasonal_naive"]})
    assert imputed.startswith(f"test imputation MSE {2 * best:.4g} against baselines on the "
                              f"same entries: the training mean ")
    assert imputed.endswith("; worse than linear interpolation (2x its MSE)")
    assert forecast.endswith("seasonal-naive with a 6-step season "
                             f"{fc['baseline_forecast_mse_seasonal_naive']:.4g}; about as good "
                             "as seasonal-naive with a 6-step season")
    [far] = baseline_lines({**fc, "forecast_mse": 1204.3 * fc["baseline_forecast_mse_mean"],
                            "baseline_forecast_season": 1.0})
    assert far.endswith("; worse than the training mean (1204x its MSE)")
    [exact] = baseline_lines({"forecast_mse": 0.5, "baseline_forecast_mse_naive": 0.0})
    assert exact.endswith("; worse than the last value, which is exact on these entries")
    [better] = baseline_lines({**out, "test_imputation_mse": 0.5 * best})
    assert better.endswith("; better than every baseline")
    no_season = {**fc, "baseline_forecast_season": 1.0, "forecast_mse": 1.0}
    [line] = baseline_lines(no_season)                  # seasonal-naive = the last value
    assert "seasonal-naive" not in line and "the last value" in line


def test_no_seasonal_naive_on_irregular_times():
    """A season in rows is one in time only on a regular grid: the same period-6 wave
    with 40% of its grid points dropped gets no seasonal-naive baseline (season 1)."""
    rng = np.random.default_rng(3)
    m = DeepKalmanFilter(DKFConfig(**SMALL), 1).double()
    t = np.arange(80, dtype=float)
    seqs = []
    for k in range(5):
        kept = np.sort(rng.choice(80, 48, replace=False))
        seqs.append(Sequence(t[kept], np.sin(2 * np.pi * (t[kept] + k) / 6)[:, None], None,
                             f"w{k}"))
    wave = SequenceDataset(seqs, ["x"])
    fc = forecast_metrics(m, wave, identity(wave), 4)
    assert fc["baseline_forecast_season"] == 1
    regular = SequenceDataset([Sequence(t, np.sin(2 * np.pi * (t + k) / 6)[:, None], None,
                                        f"r{k}") for k in range(5)], ["x"])
    assert forecast_metrics(m, regular, identity(regular), 4)["baseline_forecast_season"] == 6
