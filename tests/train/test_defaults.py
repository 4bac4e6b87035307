"""The data-sized defaults rule (dynvae.train.defaults) and the encoder masking that
teaches imputation (dynvae.models.common.encoder_mask)."""

import numpy as np
import pytest
import torch

from dynvae.commands.train import setup_run
from dynvae.data import Sequence, SequenceDataset
from dynvae.data.batch import SequenceBatch
from dynvae.models.common import encoder_mask
from dynvae.models.registry import model_class
from dynvae.train.defaults import (
    MIN_STEPS,
    DataSize,
    data_defaults,
    model_defaults,
    train_defaults,
)


def dataset(n, D, T=20, step=0.5):
    rng = np.random.default_rng(0)
    return SequenceDataset([Sequence(np.arange(T) * step, rng.normal(size=(T, D)), id=str(i))
                            for i in range(n)], [f"f{d}" for d in range(D)])


@pytest.mark.parametrize("n, D, batch, width, latent, epochs", [
    (10, 1, 8, 32, 4, 2000),          # tiny: floors
    (64, 6, 8, 64, 6, 500),           # basic-motions-like
    (512, 12, 32, 128, 12, 250),
    (1258, 64, 32, 128, 16, 100),
    (5000, 88, 32, 128, 16, 100),     # caps
])
def test_rule_scales_with_the_data(n, D, batch, width, latent, epochs):
    size = DataSize.of(dataset(n, D, T=3))
    assert (size.batch_size, size.width, size.latent_dim) == (batch, width, latent)
    assert train_defaults(size) == {"batch_size": batch, "lr": 3e-3, "lr_schedule": "constant",
                                    "average_decay": 0.995, "kl_anneal_steps": 500,
                                    "horizon_warmup_steps": 0, "max_epochs": epochs,
                                    "train_window": 0}


@pytest.mark.parametrize("given, unlimited", [
    ({"max_seconds"}, True), ({"max_cpu_seconds", "lr"}, True), ({"max_steps"}, True),
    ({"max_seconds", "max_steps"}, True), ({"max_seconds", "max_epochs"}, False),
    ({"max_epochs"}, False)])
def test_a_limit_the_user_gives_lifts_the_epoch_limit(given, unlimited):
    from dynvae.train.trainer import TrainConfig
    out = data_defaults({"train": TrainConfig(max_seconds=30.0, max_epochs=7)},
                        dataset(64, 6), given=given)
    expected = 1_000_000 if unlimited else 7
    assert out["train"].max_epochs == expected and out["train"].lr_schedule == "constant"


@pytest.mark.parametrize("n, epochs", [
    (42, 667),       # seattle-temps: 6 steps an epoch -> 4002 steps
    (64, 500),       # 8 steps an epoch
    (229, 445),      # 28 a batch, 9 steps an epoch
    (5000, 100),     # 157 steps an epoch: 100 epochs are already more than 4000 steps
])
def test_runs_without_limits_train_at_least_min_steps(n, epochs):
    from dynvae.train.trainer import TrainConfig
    out = data_defaults({"train": TrainConfig()}, dataset(n, 3, T=3), given=set())
    assert out["train"].max_epochs == epochs
    steps_per_epoch = -(-n // out["train"].batch_size)
    assert epochs * steps_per_epoch >= MIN_STEPS or epochs == 100


@pytest.mark.parametrize("n, T, window, batch, epochs", [
    (40, 128, 0, 8, 800),        # at most 128 steps: whole sequences, batches of 8 of 40
    (1, 2284, 64, 8, 800),       # one long series (co2): 36 windows in batches of 8
    (40, 129, 64, 15, 500),      # 3 windows each: 120 windows in batches of 120 // 8
    (42, 168, 64, 15, 445),      # seattle-temps' weeks: 126 windows, 9 batches an epoch
])
def test_long_sequences_train_on_windows_counted_by_the_rule(n, T, window, batch, epochs):
    from dynvae.train.trainer import TrainConfig
    size = DataSize.of(dataset(n, 2, T=T))
    assert size.max_length == T and size.train_window == window
    out = data_defaults({"train": TrainConfig()}, dataset(n, 2, T=T), given=set())
    assert (out["train"].train_window, out["train"].batch_size) == (window, batch)
    windows = n * (-(-T // 64)) if window else n
    assert out["train"].max_epochs == epochs
    assert epochs * -(-windows // batch) >= MIN_STEPS
    given = data_defaults({"train": TrainConfig(train_window=0)}, dataset(1, 2, T=2284),
                          given={"train_window"})
    assert given["train"].train_window == 0
    # a path from one initial state (the latent ODE) trains on whole sequences
    ode = train_defaults(size, horizon_warmup=True)
    assert ode["train_window"] == 0 and ode["batch_size"] == max(8, min(32, n // 8))


def test_a_model_config_may_name_its_learning_rate():
    from dynvae.commands.train import fit_sections
    from dynvae.models.registry import MODELS
    from dynvae.train.trainer import TrainConfig
    data = dataset(64, 6)
    rates = {}
    for name in MODELS:
        cls = model_class(name)
        if "train" not in fit_sections(cls):
            continue
        configs = {"model": cls.Config(), "train": TrainConfig()}
        rates[name] = data_defaults(configs, data, given=set())["train"].lr
        given = data_defaults(configs, data, given={"lr"})["train"].lr
        assert given == TrainConfig().lr, name            # --set lr keeps its value
    assert rates.pop("dkf") == 1e-2
    assert rates and set(rates.values()) == {3e-3}, rates


def test_latent_sde_time_unit_follows_the_training_windows():
    whole = DataSize.of(dataset(8, 1, T=120, step=0.5))       # spans of 59.5: unit 0.595
    assert whole.train_window == 0 and whole.time_unit == pytest.approx(0.595)
    long = DataSize.of(dataset(1, 1, T=2284, step=0.0192))   # one series in windows of 64
    assert long.train_window == 64 and long.time_unit == pytest.approx(0.0192)
    chosen = model_defaults(model_class("latent-sde").Config(), long)
    assert chosen["time_unit"] == pytest.approx(0.0192)


def test_rule_fills_model_fields_by_their_role():
    size = DataSize.of(dataset(64, 6, step=0.1))
    dkf = model_defaults(model_class("dkf").Config(), size)
    assert dkf["latent_dim"] == 6 and dkf["hide_from_encoder"] == 0.3
    assert dkf["encoder_hidden"] == 64 and dkf["emission_hidden"] == (64,)
    gpvae = model_defaults(model_class("gpvae").Config(), size)
    assert gpvae["encoder_hidden"] == (64, 64) and gpvae["lengthscale"] == pytest.approx(0.3)
    assert "n_predict_samples" not in dkf and "min_var" not in gpvae
    kvae = model_defaults(model_class("kvae").Config(), size)     # its own sized_for
    assert (kvae["pseudo_dim"], kvae["state_dim"]) == (6, 12)
    assert kvae["encoder_hidden"] == (64,) and kvae["dynamics_hidden"] == 64
    wide = model_defaults(model_class("kvae").Config(), DataSize.of(dataset(64, 40)))
    assert (wide["pseudo_dim"], wide["state_dim"]) == (16, 16)
    assert "state_dim" not in model_defaults(model_class("lgssm").Config(), size)


def test_given_keys_win_and_other_sections_are_kept():
    cls = model_class("dkf")
    from dynvae.train.trainer import TrainConfig
    configs = {"model": cls.Config(latent_dim=3), "train": TrainConfig(lr=0.5)}
    out = data_defaults(configs, dataset(64, 6), given={"latent_dim", "lr"})
    assert out["model"].latent_dim == 3 and out["train"].lr == 0.5
    assert out["train"].batch_size == 8 and out["model"].hide_from_encoder == 0.3
    fit = data_defaults({"model": model_class("lgssm").Config(), "fit": object()},
                        dataset(64, 6), set())
    assert fit["fit"] is not None and fit["model"] == model_class("lgssm").Config()


def test_command_line_setup_applies_the_rule_unless_set(tmp_path):
    path = tmp_path / "d.csv"
    dataset(40, 2).to_frame().to_csv(path, index=False)
    spec = {"data": str(path), "id_col": "id", "time_col": "t"}
    setup = setup_run("dkf", ["batch_size=3", "model.latent_dim=5"], spec)
    assert setup.configs["train"].batch_size == 3 and setup.configs["model"].latent_dim == 5
    assert setup.configs["train"].average_decay == 0.995
    assert setup_run("dkf", ["average_decay=0"], spec).configs["train"].average_decay == 0.0
    assert setup.configs["train"].kl_anneal_steps == 500          # the warm-up of every size
    assert setup.configs["model"].hide_from_encoder == 0.3
    assert setup.configs["train"].horizon_warmup_steps == 0       # not asked for by the DKF


def test_the_one_path_latent_ode_gets_the_horizon_warm_up_unless_set(tmp_path):
    path = tmp_path / "d.csv"
    dataset(40, 2).to_frame().to_csv(path, index=False)
    spec = {"data": str(path), "id_col": "id", "time_col": "t"}
    setup = setup_run("latent-ode", ["segment_steps=none"], spec)
    assert setup.configs["model"].segment_steps is None
    assert setup.configs["train"].horizon_warmup_steps == 1000
    assert setup.configs["train"].horizon_start == 10
    setup = setup_run("latent-ode", ["segment_steps=none", "horizon_warmup_steps=0"], spec)
    assert setup.configs["train"].horizon_warmup_steps == 0
    # the default, segments of 5 observation times, restarts the path: no warm-up
    setup = setup_run("latent-ode", [], spec)
    assert setup.configs["model"].segment_steps == 5
    assert setup.configs["model"].hide_from_encoder == 0.3
    assert setup.configs["train"].horizon_warmup_steps == 0


def _batch(B=4, T=30, D=3):
    x = torch.randn(B, T, D)
    x[0, 5:, :] = float("nan")
    return SequenceBatch.from_tensor(x)


def test_encoder_mask_hides_observed_entries_at_the_rate_only_in_training():
    batch = _batch(B=64)
    assert encoder_mask(batch, 0.3, training=False) is batch.mask
    assert encoder_mask(batch, 0.0, training=True) is batch.mask
    torch.manual_seed(0)
    seen = encoder_mask(batch, 0.3, training=True)
    assert not (seen & ~batch.mask).any()                          # never reveals
    share = 1 - seen.sum() / batch.mask.sum()
    assert abs(float(share) - 0.3) < 0.02


def test_encoder_mask_never_empties_a_sequence():
    x = torch.full((50, 2, 1), float("nan"))
    x[:, 0, 0] = 1.0                                               # one entry each
    batch = SequenceBatch.from_tensor(x)
    torch.manual_seed(0)
    assert encoder_mask(batch, 0.9, training=True).flatten(1).any(1).all()


@pytest.mark.parametrize("name", ["dkf", "vrnn", "gpvae", "latent-sde", "kvae"])
def test_hidden_entries_still_enter_the_likelihood(name):
    """Hiding from the encoder leaves the scored entries (n_obs) and, in evaluation,
    every output unchanged."""
    cls = model_class(name)
    torch.manual_seed(0)
    model = cls.from_config({"hide_from_encoder": 0.5, "n_predict_samples": 2}, 3).double()
    batch = _batch().to(dtype=torch.float64)
    terms = model.train().elbo(batch)
    torch.testing.assert_close(terms.n_obs, batch.n_observed().double())
    plain = cls.from_config({"n_predict_samples": 2}, 3).double()
    plain.load_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    torch.manual_seed(1)
    a = model.elbo(batch).elbo()
    torch.manual_seed(1)
    torch.testing.assert_close(a, plain.elbo(batch).elbo())


def test_kvae_recognition_network_reads_the_hidden_entries_as_unseen():
    cls = model_class("kvae")
    torch.manual_seed(0)
    model = cls.from_config({"hide_from_encoder": 0.5}, 3).double()
    plain = cls.from_config({}, 3).double()
    plain.load_state_dict(model.state_dict())
    batch = model._prepare(_batch().to(dtype=torch.float64))
    torch.manual_seed(2)
    hidden = model.train().encode(batch)[0]
    torch.manual_seed(2)
    seen = plain.train().encode(batch)[0]
    assert (hidden - seen).abs().max() > 1e-3                  # training hides entries
    torch.testing.assert_close(model.eval().encode(batch)[0], plain.eval().encode(batch)[0])


@pytest.mark.parametrize("name", ["storn", "srnn"])
def test_hiding_from_the_recurrence_while_training_only(name):
    """hide_from_recurrence hides entries of x_{t-1} from the generative recurrence in
    training (the bound changes, every entry is still scored) and nothing in evaluation;
    the data-size rule sets it to the same share as hide_from_encoder."""
    cls = model_class(name)
    assert model_defaults(cls.Config(), DataSize.of(dataset(64, 6)))["hide_from_recurrence"] == 0.3
    torch.manual_seed(0)
    model = cls.from_config({"hide_from_recurrence": 0.5, "n_predict_samples": 2}, 3).double()
    # a share that hides nothing but draws the same random numbers: the difference in
    # training is the hiding's alone
    plain = cls.from_config({"hide_from_recurrence": 1e-300, "n_predict_samples": 2},
                            3).double()
    plain.load_state_dict(model.state_dict())
    batch = _batch().to(dtype=torch.float64)
    results = []
    for m in (model, plain):
        torch.manual_seed(1)
        terms = m.train().elbo(batch)
        torch.testing.assert_close(terms.n_obs, batch.n_observed().double())
        torch.manual_seed(1)
        results.append((terms.elbo(), m.eval().elbo(batch).elbo()))
    assert (results[0][0] - results[1][0]).abs().max() > 1e-6      # training hides entries
    torch.testing.assert_close(results[0][1], results[1][1])
