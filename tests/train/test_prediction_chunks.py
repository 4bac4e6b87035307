"""Predictions in bounded memory: the sequences predicted at once shrink with the
model's posterior draws x steps x D, and predicting in chunks changes nothing for a
model whose predictions are exact (the LGSSM's Kalman smoother and forecasts)."""

import numpy as np
import pytest
import torch

import dynvae.train.evaluation as evaluation
from dynvae.commands.report import predictions
from dynvae.data import Standardizer, from_numpy
from dynvae.models.registry import model_class
from tests.models.contract_configs import SMALL_CONFIGS


def _data(N, T, shape, lengths=None):
    x = np.random.default_rng(0).uniform(size=(N, T, *shape))
    return from_numpy(x, lengths=lengths)


def test_chunk_size_follows_draws_steps_and_pixels():
    frames = _data(2, 20, (64, 64))                         # D = 4096
    dkf = model_class("dkf").from_config({"n_predict_samples": 64}, 4096)
    assert evaluation.prediction_chunk(dkf, frames) == 2 ** 24 // (64 * 20 * 4096) == 3
    assert evaluation.prediction_chunk(dkf, frames, draws=16) == 12
    small = _data(2, 20, (3,))
    assert evaluation.prediction_chunk(dkf, small) == evaluation.CHUNK
    lgssm = model_class("lgssm").from_config(SMALL_CONFIGS["lgssm"], 4096)
    assert evaluation.prediction_chunk(lgssm, frames, draws=None) == evaluation.CHUNK  # 1 draw


@pytest.mark.parametrize("entries", [1, 10 ** 9])
def test_chunked_exact_predictions_equal_the_whole_batch(entries, monkeypatch):
    data = _data(5, 7, (2,), lengths=[7, 3, 5, 7, 2])
    model = model_class("lgssm").from_config(SMALL_CONFIGS["lgssm"], 2).double()
    scaler = Standardizer().fit(data)
    whole = model.reconstruct(scaler.transform(data).to_batch(dtype=torch.float64))
    monkeypatch.setattr(evaluation, "PREDICTION_ENTRIES", entries)   # 1: one sequence
    assert evaluation.prediction_chunk(model, data) == (1 if entries == 1 else evaluation.CHUNK)
    batch, _, _, mean, std = predictions(model, scaler.transform(data), scaler)
    valid = batch.valid.numpy()
    expected = scaler.inverse_mean(whole.mean.double()).numpy()
    np.testing.assert_allclose(mean[valid], expected[valid], rtol=1e-10, atol=1e-12)
    expected = scaler.inverse_std(whole.std.double()).numpy()
    np.testing.assert_allclose(std[valid], expected[valid], rtol=1e-10, atol=1e-12)


def test_chunks_in_length_order_cover_every_sequence_once():
    assert evaluation.chunks(5, 2) == [[0, 1], [2, 3], [4]]
    assert evaluation.chunks(5, 2, lengths=[7, 3, 5, 7, 2]) == [[4, 1], [2, 0], [3]]


def test_metrics_in_length_ordered_chunks_equal_one_chunk(monkeypatch):
    """imputation_metrics, forecast_metrics and likelihood_metrics predict in chunks of
    sequences of similar length and put each result back at its sequence: with an exact
    model they equal the scores of the whole set predicted at once."""
    data = _data(7, 9, (2,), lengths=[9, 4, 6, 9, 5, 8, 4])
    model = model_class("lgssm").from_config(SMALL_CONFIGS["lgssm"], 2).double()
    scaler = Standardizer().fit(data)
    given = scaler.transform(data)

    def scores():
        return {**evaluation.imputation_metrics(model, given, scaler, 0.3, seed=1),
                **evaluation.forecast_metrics(model, given, scaler, horizon=2),
                **evaluation.likelihood_metrics(model, given, scaler, k=1)}
    whole = scores()
    # the imputation by hand: the whole batch in dataset order
    batch = given.to_batch(dtype=torch.float64)
    hidden = evaluation.hide_entries(batch, 0.3, 1)
    pred = model.reconstruct(batch.with_mask(batch.mask & ~hidden))
    error = (scaler.inverse_mean(pred.mean.double()) - scaler.inverse_mean(batch.x.double()))
    assert whole["test_imputation_mse"] == pytest.approx(
        float((error ** 2)[hidden].mean()), rel=1e-10)
    monkeypatch.setattr(evaluation, "PREDICTION_ENTRIES", 1)   # one sequence at a time
    assert evaluation.prediction_chunk(model, data) == 1
    chunked = scores()
    assert whole.keys() == chunked.keys() and "test_imputation_mse" in whole
    for key, value in whole.items():
        assert chunked[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
