"""The latent SDE's unit of time (LatentSDEConfig.time_unit): data whose times are
u times larger, read by a model with time_unit = u, give exactly the terms, imputations,
forecasts and samples of the original data read by time_unit = 1 (same weights, same
noise); and ``dynvae train``'s rule sets it to the median step."""

import math

import numpy as np
import pytest
import torch

from dynvae.data import Sequence, SequenceDataset
from dynvae.models.registry import model_class
from dynvae.sde import BrownianPath
from dynvae.train.defaults import DataSize, model_defaults
from tests.models.test_latent_sde import DT, Z, fixed_noise, irregular_batch, make_model
from tests.models.unit_checks import UNIT, assert_predictions_do_not_depend_on_the_unit, scaled


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
    assert_predictions_do_not_depend_on_the_unit(base, other, irregular_batch(),
                                                 rtol=1e-12, atol=1e-10)


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


def _long_sine(n_seq: int = 4, n_times: int = 1000, step: float = 0.01) -> SequenceDataset:
    rng = np.random.default_rng(3)
    t = np.arange(n_times) * step
    seqs = [Sequence(t, np.stack([np.sin(t + p), np.cos(2 * t + p)], 1)
                     + 0.1 * rng.normal(size=(n_times, 2)), id=str(i))
            for i, p in enumerate(rng.uniform(0, 6, n_seq))]
    return SequenceDataset(seqs, ["a", "b"])


def test_rule_keeps_a_sequence_within_a_hundred_units_of_model_time():
    data = _long_sine(n_times=120, step=0.01)              # span 1.19: unit 0.0119
    size = DataSize.of(data)
    assert size.median_step == pytest.approx(0.01) and size.train_window == 0
    chosen = model_defaults(model_class("latent-sde").Config(), size)
    assert chosen["time_unit"] == pytest.approx(1.19 / 100)
    short = DataSize.of(_long_sine(n_times=50, step=0.01))  # 49 steps: the median step
    assert model_defaults(model_class("latent-sde").Config(), short)["time_unit"] == \
        pytest.approx(0.01)
    # 1,000 steps train on windows of 64 (63 units of model time at the median step)
    windowed = DataSize.of(_long_sine(n_times=1000, step=0.01))
    assert windowed.train_window == 64
    assert model_defaults(model_class("latent-sde").Config(), windowed)["time_unit"] == \
        pytest.approx(0.01)


@pytest.mark.parametrize("unit", ["rule", "median-step"])
def test_the_rules_unit_gives_a_finite_first_loss_on_long_sequences(unit):
    # 1,000 observation times read in steps (1,000 units of model time): the untrained
    # drift networks overflow the solve. The rule trains such sequences on windows of 64
    # steps, whose first loss at its unit is finite.
    from dynvae.train.batching import TrainingWindows
    data = _long_sine()
    cls = model_class("latent-sde")
    size = DataSize.of(data)
    config = cls.Config(**model_defaults(cls.Config(), size))
    torch.manual_seed(0)
    model = cls(config, 2)
    if unit == "rule":
        windows = TrainingWindows(data, size.train_window, seed=0, epoch=0)
        batch = windows.to_batch(range(len(windows)))
        assert batch.x.shape[1] == 64
    else:   # guard: the case the windows prevent does overflow
        assert config.time_unit == pytest.approx(0.01)
        batch = data.to_batch()
    with torch.no_grad():
        loss = float(model.elbo(batch, 1).loss())
    if unit == "rule":
        assert math.isfinite(loss) and loss < 50, loss
    else:
        assert not math.isfinite(loss) or loss > 1e6, loss
