"""DKF and VRNN on irregular times: one warning with the measured irregularity, and the
time gap as an input feature (time_gap_input)."""

import math
import warnings

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.models.time_gaps import TimeGapFeature
from dynvae.models.vrnn import VRNN, VRNNConfig
from dynvae.train.checkpoint import load_checkpoint, save_checkpoint
from tests.models.test_dkf_contract import make_batch, seeded

SMALL = {
    "dkf": (DeepKalmanFilter, DKFConfig, dict(latent_dim=3, encoder_hidden=6,
                                              transition_hidden=(6,), emission_hidden=(6,),
                                              n_predict_samples=4)),
    "vrnn": (VRNN, VRNNConfig, dict(latent_dim=3, hidden_size=6, feature_size=5,
                                    mlp_hidden=(6,), n_predict_samples=4)),
}


def build(name, U=0, **kw):
    cls, config, small = SMALL[name]
    return cls.from_config(config(**{**small, **kw}), 2, U).double()


def with_times(batch, t):
    return SequenceBatch(batch.x, batch.mask, t.expand(batch.batch_size, -1).contiguous(),
                         batch.lengths, batch.u)


GAPPED = torch.tensor([0.0, 1.0, 2.0, 7.0, 8.0, 20.0], dtype=torch.float64)


@pytest.mark.parametrize("name", SMALL)
def test_irregular_times_warn_once_with_the_measured_irregularity(name):
    m, batch = build(name), make_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.elbo(batch)                                       # regular times: no warning
    gapped = with_times(batch, GAPPED)
    with pytest.warns(UserWarning, match=r"discrete-time model.*grid points absent"):
        m.elbo(gapped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.elbo(gapped)
        m.reconstruct(gapped)


def test_gap_feature_is_log_steps_over_the_median_step():
    batch = with_times(make_batch(lengths=(6, 6, 6)), GAPPED * 0.5)
    out = TimeGapFeature().batch(batch)
    expected = torch.log(torch.tensor([1.0, 1.0, 1.0, 5.0, 1.0, 12.0], dtype=torch.float64))
    torch.testing.assert_close(out.u[0, :, 0], expected)
    future = TimeGapFeature()
    future.scale.fill_(0.5)
    g = future.future(torch.tensor([10.0]), torch.tensor([[10.5, 12.0]]), None)
    torch.testing.assert_close(g[0, :, 0], torch.log(torch.tensor([1.0, 3.0])).double())


@pytest.mark.parametrize("name", SMALL)
def test_time_gap_input_changes_the_model_with_the_times_only_when_on(name):
    batch = make_batch(U=1)
    gapped = with_times(batch, GAPPED)
    plain = build(name, U=1)
    with pytest.warns(UserWarning, match="irregular"):
        torch.testing.assert_close(seeded(lambda: plain.elbo(batch, 2).elbo()),
                                   seeded(lambda: plain.elbo(gapped, 2).elbo()), rtol=0, atol=0)
    m = build(name, U=1, time_gap_input=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no warning: the gaps are inputs
        a = seeded(lambda: m.elbo(batch, 2).elbo())
        b = seeded(lambda: m.elbo(gapped, 2).elbo())
    assert not torch.allclose(a, b)
    m.elbo(batch).loss().backward()
    t_future = torch.tensor([[6.0, 9.0]]).expand(3, 2).double() + batch.t[:, -1:]
    fc = m.forecast(batch, t_future, torch.zeros(3, 2, 1, dtype=torch.float64))
    assert fc.mean.shape == (3, 2, 2) and torch.isfinite(fc.std).all()
    draws = m.sample(2, GAPPED, torch.zeros(6, 1, dtype=torch.float64))
    assert draws.shape == (2, 6, 2)


@pytest.mark.parametrize("name", SMALL)
def test_time_scale_is_saved_with_the_model(name, tmp_path):
    m = build(name, time_gap_input=True)
    m.elbo(with_times(make_batch(), GAPPED * 3.0))
    assert math.isclose(float(m.time_gaps.scale), 3.0)
    save_checkpoint(tmp_path / "m.pt", {"model": m.state_dict()})
    other = build(name, time_gap_input=True)
    other.load_state_dict(load_checkpoint(tmp_path / "m.pt")["model"])
    assert math.isclose(float(other.time_gaps.scale), 3.0)
