"""Posterior-collapse countermeasures and diagnostics of the trainer: free bits per latent
dimension, the per-dimension KL columns of the history and the collapse warning."""

import csv

import pytest
import torch

from dynvae.errors import ConfigError
from dynvae.models.dkf import DeepKalmanFilter, DKFConfig
from dynvae.train.collapse import collapse_report
from dynvae.train.history import kl_weight
from dynvae.train.trainer import TrainConfig, Trainer

from .tiny_model import ListDataset, TinyLinearDVAE, make_data

SMALL = dict(latent_dim=3, encoder_hidden=6, transition_hidden=(6,), emission_hidden=(6,))


def _dkf(seed=0):
    torch.manual_seed(seed)
    return DeepKalmanFilter(DKFConfig(**SMALL), 3).double()


def _config(**kw):
    base = dict(lr=0.01, batch_size=4, max_steps=4, eval_every=100, patience=None,
                checkpoint_every=100, seed=1, dtype="float64", progress=False)
    return TrainConfig(**{**base, **kw})


def _batch(n=4):
    return ListDataset(make_data(n)).to_batch(list(range(n)), dtype=torch.float64)


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_kl_dims_add_up_to_the_kl():
    terms = _dkf().elbo(_batch())
    assert terms.kl_dims.shape == (4, 3)
    torch.testing.assert_close(terms.kl_dims.sum(-1), terms.kl)


@pytest.mark.parametrize("free_bits", [0.0, 1e-6, 1e6])
def test_free_bits_loss_floors_each_dimension(free_bits):
    """loss = -(sum_b log_lik_b - beta sum_z max(sum_b kl_bz, free_bits * steps)) / N."""
    model, batch = _dkf(), _batch()
    trainer = Trainer(model, _config(free_bits=free_bits))
    torch.manual_seed(5)
    loss_local, loss, row = trainer._loss(batch, beta=0.7)
    torch.manual_seed(5)
    terms = model.elbo(batch)
    steps = batch.lengths.sum().double()
    kl = terms.kl_dims.sum(0)
    kl = torch.maximum(kl, free_bits * steps) if free_bits > 0 else kl
    want = -(terms.log_lik.sum() - 0.7 * kl.sum()) / terms.n_obs.sum()
    torch.testing.assert_close(loss_local, want)
    assert loss == pytest.approx(float(want.detach()))
    assert row["kl_per_step"] == pytest.approx(float(terms.kl.sum() / steps))
    assert [row[f"kl_dim{i}"] for i in range(3)] == pytest.approx(
        (terms.kl_dims.sum(0) / steps).tolist())


def test_dimensions_under_the_floor_get_no_kl_gradient():
    model, batch = _dkf(), _batch()
    trainer = Trainer(model, _config(free_bits=1e6))        # every dim under the floor
    torch.manual_seed(5)
    floored = _grads(model, trainer._loss(batch, beta=1.0)[0])
    torch.manual_seed(5)
    terms = model.elbo(batch)
    likelihood_only = _grads(model, -terms.log_lik.sum() / terms.n_obs.sum())
    assert likelihood_only.keys() <= floored.keys()
    for name, g in floored.items():          # the prior's parameters enter the KL only
        want = likelihood_only.get(name, torch.zeros_like(g))
        torch.testing.assert_close(g, want, msg=name)
    assert any(name not in likelihood_only for name in floored)


def test_free_bits_need_the_kl_per_dimension():
    torch.manual_seed(0)
    trainer = Trainer(TinyLinearDVAE(3, 2).double(), _config(free_bits=0.1))
    with pytest.raises(ConfigError, match="kl_dims"):
        trainer._loss(_batch(), beta=1.0)


def test_history_and_metrics_csv_carry_the_kl_per_dimension(tmp_path):
    result = Trainer(_dkf(), _config(), tmp_path).fit(ListDataset(make_data(8)))
    assert all({"kl_per_step", "kl_dim0", "kl_dim1", "kl_dim2"} <= set(r)
               for r in result.history)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and float(rows[-1]["kl_dim2"]) == pytest.approx(
        result.history[-1]["kl_dim2"])
    assert sum(float(rows[-1][f"kl_dim{i}"]) for i in range(3)) == pytest.approx(
        float(rows[-1]["kl_per_step"]))


def _rows(values, start=1):
    return [{"step": start + i, **{f"kl_dim{d}": v for d, v in enumerate(row)}}
            for i, row in enumerate(values)]


def test_collapse_report_counts_active_dimensions_after_the_warm_up():
    during = _rows([[1.0, 1.0]] * 10)                         # warm-up: ignored
    collapsed = _rows([[1e-4, 2e-3]] * 10, start=11)
    assert collapse_report(during + collapsed, 10, 0.01)[:2] == (0, 2)
    assert "posterior collapse" in collapse_report(during + collapsed, 10, 0.01)[2]
    active = _rows([[1e-4, 0.5]] * 10, start=11)
    assert collapse_report(during + active, 10, 0.01) == (1, 2, None)
    assert collapse_report(during, 10, 0.01) == (0, 0, None)     # nothing after warm-up


def test_trainer_warns_when_every_dimension_is_inactive(capsys):
    Trainer(_dkf(), _config(collapse_threshold=1e9)).fit(ListDataset(make_data(8)))
    assert "warning: posterior collapse" in capsys.readouterr().err
    Trainer(_dkf(), _config(collapse_threshold=0.0)).fit(ListDataset(make_data(8)))
    assert "posterior collapse" not in capsys.readouterr().err


def test_warm_up_and_beta_schedule():
    assert [kl_weight(s, 4, 0.8) for s in (0, 2, 4, 9)] == pytest.approx([0, 0.4, 0.8, 0.8])


def test_bad_free_bits_are_a_config_error():
    with pytest.raises(ConfigError, match="free_bits"):
        TrainConfig(free_bits=-1.0)


def test_the_collapse_plot_takes_one_label_per_column(tmp_path):
    from dynvae.plots import plot_kl_per_dimension
    history = [{"step": s, "kl_dim0": 0.5, "kl_dim1": 0.001} for s in range(1, 5)]
    asked = []
    names = lambda n: asked.append(n) or ["z[0]", "v[0]"]
    assert plot_kl_per_dimension(history, tmp_path / "a.png", 0.01, 2, labels=names)
    assert asked == [2] and (tmp_path / "a.png").stat().st_size > 0
    with pytest.raises(ValueError, match="1 labels for 2 KL columns"):
        plot_kl_per_dimension(history, tmp_path / "b.png", 0.01, 2, labels=lambda n: ["z[0]"])
    assert not (tmp_path / "b.png").exists()
