"""The latent SDE's unit of time (LatentSDEConfig.time_unit): data whose times are
u times larger, read by a model with time_unit = u, give exactly the terms, imputations,
forecasts and samples of the original data read by time_unit = 1 (same weights, same
noise); and ``dynvae train``'s rule sets it to the median step."""

import numpy as np
import pytest
import torch

from dynvae.data import Sequence, SequenceDataset
from dynvae.data.batch import SequenceBatch
from dynvae.models.registry import model_class
from dynvae.sde import BrownianPath
from dynvae.train.defaults import DataSize, model_defaults
from tests.models.test_latent_sde import DT, Z, fixed_noise, irregular_batch, make_model

UNIT = 1024.0      # a power of two: scaling times by it is exact in floating point


def scaled(batch: SequenceBatch, unit: float) -> SequenceBatch:
    return SequenceBatch(batch.x, batch.mask, batch.t * unit, batch.lengths)


def pair(**overrides):
    base = make_model(**overrides)
    other = make_model(**{**overrides, "dt": DT * UNIT, "time_unit": UNIT})
    other.load_state_dict(base.state_dict())
    return base, other


@pytest.mark.parametrize("solver", ["euler", "milstein"])
def test_terms_do_not_depend_on_the_unit_of_the_data(solver):
    base, other = pair(solver=solver)
    batch = irregular_batch()
    bm, eps = fixed_noise(batch)          # in the model's unit: the same path for both
    a = base.elbo(batch, bm=bm, z0_noise=eps)
    b = other.elbo(scaled(batch, UNIT), bm=bm, z0_noise=eps)
    torch.testing.assert_close(b.log_lik, a.log_lik, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(b.kl, a.kl, rtol=1e-12, atol=1e-10)
    wa = base.log_weights(batch, 1, bm=bm, z0_noise=eps)
    wb = other.log_weights(scaled(batch, UNIT), 1, bm=bm, z0_noise=eps)
    torch.testing.assert_close(wb, wa, rtol=1e-12, atol=1e-10)


def test_predictions_and_samples_do_not_depend_on_the_unit_of_the_data():
    base, other = pair()
    batch = irregular_batch()
    future = torch.tensor([[0.3, 0.5], [0.2, 0.9], [0.1, 0.4]], dtype=torch.float64)
    t_last = batch.t.gather(1, (batch.lengths - 1)[:, None])
    outputs = []
    for model, unit in ((base, 1.0), (other, UNIT)):
        torch.manual_seed(5)
        rec = model.reconstruct(scaled(batch, unit))
        torch.manual_seed(6)
        fc = model.forecast(scaled(batch, unit), (t_last + future) * unit)
        torch.manual_seed(7)
        draws = model.sample(4, torch.arange(6, dtype=torch.float64) * 0.2 * unit)
        outputs.append((rec, fc, draws))
    (ra, fa, sa), (rb, fb, sb) = outputs
    torch.testing.assert_close(rb.mean, ra.mean, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(rb.std, ra.std, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(rb.t, batch.t * UNIT)               # in the data's unit
    torch.testing.assert_close(fb.mean, fa.mean, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(fb.t, fa.t * UNIT)
    torch.testing.assert_close(sb, sa, rtol=1e-12, atol=1e-10)


def test_the_unit_changes_the_model_when_the_data_keeps_its_times():
    """Guard: time_unit is not ignored (the equalities above are not vacuous)."""
    base, other = pair()
    batch = irregular_batch()
    bm, eps = fixed_noise(batch)
    a = base.elbo(batch, bm=bm, z0_noise=eps)
    # the other model's times are batch.t / UNIT, inside [0, 1]
    bm_b = BrownianPath(0.0, 1.0, (batch.batch_size, Z), dtype=torch.float64, seed=2)
    b = other.elbo(batch, bm=bm_b, z0_noise=eps)
    assert not torch.allclose(a.kl, b.kl)


def test_rule_sets_the_unit_to_the_median_step():
    rng = np.random.default_rng(0)
    data = SequenceDataset([Sequence(np.arange(20) * 0.1, rng.normal(size=(20, 6)), id=str(i))
                            for i in range(64)], [f"f{d}" for d in range(6)])
    chosen = model_defaults(model_class("latent-sde").Config(), DataSize.of(data))
    assert chosen["time_unit"] == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_unit_must_be_positive(bad):
    from dynvae.errors import ConfigError
    with pytest.raises(ConfigError, match="time_unit"):
        model_class("latent-sde").Config(time_unit=bad)
