"""A new run starts every Bernoulli decoder at the log-odds of its features' training
means (dynvae.train.trainer.output_bias_init, TrainConfig.init_output_bias)."""

import dataclasses

import numpy as np
import pytest
import torch

from dynvae.commands.train import fit_sections
from dynvae.data import Sequence, SequenceDataset
from dynvae.models.registry import MODELS, model_class
from dynvae.nn.observation import BernoulliObservation
from dynvae.train.trainer import TrainConfig, Trainer, output_bias_init

RATES = np.array([0.0, 0.02, 0.3, 0.9, 1.0])     # never on, rare, ..., always on


def binary_data(n=12, T=15, seed=0):
    rng = np.random.default_rng(seed)
    sequences = []
    for i in range(n):
        x = (rng.random((T, RATES.size)) < RATES).astype(float)
        x[rng.random(x.shape) < 0.2] = np.nan                    # unobserved entries
        sequences.append(Sequence(np.arange(T, dtype=float), x, id=str(i)))
    x = sequences[0].x
    x[:, 2] = np.nan                         # feature 2 unseen in one sequence only
    return SequenceDataset(sequences, [f"k{d}" for d in range(RATES.size)])


def log_odds_of(data, clip=1e-3):
    x = np.concatenate([s.x for s in data.sequences])
    p = np.clip(np.nanmean(x, 0), clip, 1 - clip)
    return np.log(p / (1 - p))


def bernoulli_heads(model):
    return [m for m in model.modules() if isinstance(m, BernoulliObservation)]


def bernoulli_models():
    out = []
    for name in MODELS:
        cls = model_class(name)
        names = {f.name for f in dataclasses.fields(cls.Config)}
        if "train" in fit_sections(cls) and "observation" in names:
            out.append(name)
    return out


@pytest.mark.parametrize("name", bernoulli_models())
def test_every_bernoulli_decoder_starts_at_the_log_odds_of_the_data(name):
    cls = model_class(name)
    torch.manual_seed(0)
    model = cls.from_config(cls.Config(observation="bernoulli"), RATES.size, 0)
    data = binary_data()
    heads = bernoulli_heads(model)
    assert heads and output_bias_init(model, data) == len(heads)
    expected = log_odds_of(data)
    assert expected[0] == pytest.approx(np.log(1e-3 / (1 - 1e-3)))   # clipped, finite
    assert expected[-1] == pytest.approx(-expected[0])
    for head in heads:
        np.testing.assert_allclose(head.logits.bias.detach().double().numpy(), expected,
                                   rtol=1e-6)


def test_gaussian_decoders_and_streams_are_left_alone():
    cls = model_class("dkf")
    model = cls.from_config(cls.Config(), RATES.size, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert output_bias_init(model, binary_data()) == 0
    bern = cls.from_config(cls.Config(observation="bernoulli"), RATES.size, 0)
    assert output_bias_init(bern, object()) == 0          # no in-memory sequences
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _dkf(seed=0):
    torch.manual_seed(seed)
    cls = model_class("dkf")
    return cls.from_config(cls.Config(observation="bernoulli", latent_dim=2, encoder_hidden=8,
                                      transition_hidden=(8,), emission_hidden=(8,)),
                           RATES.size, 0)


def _bias(model):
    return bernoulli_heads(model)[0].logits.bias.detach().double().numpy()


def test_a_new_run_starts_there_and_a_resumed_one_keeps_its_parameters(tmp_path):
    data = binary_data()
    cfg = dict(lr=1e-9, batch_size=4, eval_every=1, checkpoint_every=1, patience=None,
               progress=False)
    model = _dkf()
    Trainer(model, TrainConfig(max_steps=1, **cfg), tmp_path / "new").fit(data)
    np.testing.assert_allclose(_bias(model), log_odds_of(data), atol=1e-5)

    off = _dkf()
    initial = _bias(off).copy()
    Trainer(off, TrainConfig(max_steps=1, init_output_bias=False, **cfg),
            tmp_path / "off").fit(data)
    np.testing.assert_allclose(_bias(off), initial, atol=1e-5)

    # a resumed run continues from its checkpoint: the bias the first run learned, not
    # the log-odds of the data again
    run = _dkf()
    Trainer(run, TrainConfig(max_steps=2, **dict(cfg, lr=0.05)), tmp_path / "r").fit(data)
    learned = _bias(run).copy()
    assert np.abs(learned - log_odds_of(data)).max() > 1e-3
    resumed = _dkf(seed=3)
    Trainer.resume(tmp_path / "r", resumed, data, None,
                   TrainConfig(max_steps=2, **dict(cfg, lr=0.05)))
    np.testing.assert_allclose(_bias(resumed), learned, atol=1e-6)
