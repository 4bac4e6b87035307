import math

import numpy as np
import pytest
import torch

from dynvae.data.digits import load_healing_digits
from dynvae.models.base import Prediction
from dynvae.train.metrics import evaluate_elbo, missing_entry_metrics

from .tiny_model import ListDataset, TinyLinearDVAE, make_data


class _Half(TinyLinearDVAE):
    """Imputes every entry with 0.5."""

    def reconstruct(self, batch):
        half = torch.full_like(batch.x, 0.5)
        return Prediction(batch.t, half, half)


def test_missing_entry_metrics_against_a_constant_imputation():
    observed = load_healing_digits("all", n_sequences=10, length=4, seed=2)
    complete = load_healing_digits("all", n_sequences=10, length=4, seed=2, complete=True)
    out = missing_entry_metrics(_Half(64), observed, complete, batch_size=3)
    x = np.stack([s.x for s in observed])
    truth = np.stack([s.x for s in complete])
    missing = np.isnan(x)
    assert out["test_missing_entries"] == missing.sum()
    assert out["test_missing_mse"] == pytest.approx(((truth - 0.5) ** 2)[missing].mean())
    assert out["test_missing_bce"] == pytest.approx(math.log(2.0))


def test_evaluate_elbo_normalisations():
    data = ListDataset(make_data(7, T=5))
    model = TinyLinearDVAE(3, analytic=True).double()
    summary = evaluate_elbo(model, data, batch_size=3)
    batch = data.to_batch(list(range(7)), dtype=torch.float64)
    with torch.no_grad():
        terms = model.elbo(batch)
    assert summary.total == pytest.approx(float(terms.elbo().sum()), rel=1e-12)
    assert summary.n_steps == 35 and summary.n_obs == int(batch.mask.sum())
    assert summary.per_obs == pytest.approx(-float(terms.loss()), rel=1e-12)


def test_missing_entry_metrics_on_the_original_scale_with_a_standardizer():
    from dynvae.data import Standardizer
    observed = load_healing_digits("all", n_sequences=10, length=4, seed=2)
    complete = load_healing_digits("all", n_sequences=10, length=4, seed=2, complete=True)
    scaler = Standardizer(np.full(64, 0.1), np.full(64, 0.5), observed.feature_names)
    out = missing_entry_metrics(_Half(64), scaler.transform(observed), complete,
                                batch_size=3, standardizer=scaler)
    truth = np.stack([s.x for s in complete])[np.isnan(np.stack([s.x for s in observed]))]
    # the model's 0.5 is 0.1 + 0.5 * 0.5 = 0.35 on the original scale, where truth lives
    assert out["test_missing_mse"] == pytest.approx(((truth - 0.35) ** 2).mean())
    bce = -(truth * math.log(0.35) + (1 - truth) * math.log(0.65)).mean()
    assert out["test_missing_bce"] == pytest.approx(bce)


class _Truthful(TinyLinearDVAE):
    """Imputes every entry with a fixed tensor (set per test)."""

    values: torch.Tensor

    def reconstruct(self, batch):
        v = self.values[: batch.batch_size].to(batch.x)
        return Prediction(batch.t, v, v)


def test_missing_binary_error_counts_rounded_disagreements():
    observed = load_healing_digits("all", n_sequences=6, length=3, seed=4)
    complete = load_healing_digits("all", n_sequences=6, length=3, seed=4, complete=True)
    truth = torch.as_tensor(np.stack([s.x for s in complete]))
    missing = np.isnan(np.stack([s.x for s in observed]))
    g = torch.Generator().manual_seed(0)
    guess = torch.rand(truth.shape, generator=g, dtype=torch.float64)
    model = _Truthful(64)
    model.values = guess
    out = missing_entry_metrics(model, observed, complete, batch_size=6)
    wrong = ((guess > 0.5) != (truth > 0.5)).numpy()[missing]
    assert 0.2 < wrong.mean() < 0.8
    assert out["test_missing_binary_error"] == pytest.approx(wrong.mean(), abs=0)
    model.values = truth.clone()               # the truth itself: no disagreement
    assert missing_entry_metrics(model, observed, complete)["test_missing_binary_error"] == 0
