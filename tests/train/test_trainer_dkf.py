"""The trainer on the registered neural models and a built-in dataset."""

import pytest
import torch

from dynvae.data.digits import load_healing_digits
from dynvae.models.registry import model_class
from dynvae.train.checkpoint import load_checkpoint
from dynvae.train.metrics import evaluate_elbo
from dynvae.train.trainer import TrainConfig, Trainer


def _build(name, data_dim, seed=0, **config):
    torch.manual_seed(seed)
    cls = model_class(name)
    return cls.from_config(cls.Config(**config) if hasattr(cls, "Config") else config,
                           data_dim, 0)


SMALL = {"dkf": dict(latent_dim=3, encoder_hidden=8, transition_hidden=(8,),
                    emission_hidden=(8,)),
         "vrnn": dict(latent_dim=3, hidden_size=8, feature_size=8, mlp_hidden=(8,))}


@pytest.fixture(scope="module")
def digits():
    train = load_healing_digits("train", n_sequences=40, length=6)
    val = load_healing_digits("valid", n_sequences=40, length=6)
    return train, val


@pytest.mark.parametrize("name", ["dkf", "vrnn"])
def test_resume_is_exact_for_registered_models(tmp_path, digits, name):
    train, val = digits
    small = SMALL[name]
    cfg = dict(lr=3e-3, batch_size=8, eval_every=2, checkpoint_every=2, patience=None,
               seed=1, progress=False, kl_anneal_steps=4, missing_rate=0.1)
    full = _build(name, 64, **small)
    Trainer(full, TrainConfig(max_steps=4, **cfg), tmp_path / "a").fit(train, val)
    Trainer(_build(name, 64, **small), TrainConfig(max_steps=2, **cfg),
            tmp_path / "b").fit(train, val)
    Trainer.resume(tmp_path / "b", _build(name, 64, seed=7, **small), train, val,
                   TrainConfig(max_steps=4, **cfg))
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_dkf_learns_healing_digits(digits):
    train, val = digits
    model = _build("dkf", 64, latent_dim=4, observation="bernoulli")
    before = evaluate_elbo(model, val, n_samples=4).per_step
    cfg = TrainConfig(lr=1e-2, batch_size=8, max_steps=40, eval_every=20, patience=None,
                      progress=False)
    result = Trainer(model, cfg).fit(train, val)
    after = evaluate_elbo(model, val, n_samples=4).per_step
    assert result.best_val is not None and after > before + 5.0


def test_free_variances_learn_at_variance_lr_times_lr():
    """One Adam step moves a free variance parameter by ~variance_lr x lr (Adam's first
    step is lr x sign(gradient) per parameter), every other parameter by ~lr."""
    from dynvae.data import SequenceDataset
    from dynvae.data.dataset import Sequence
    from dynvae.nn.mlp import FreeVariance
    rng = torch.Generator().manual_seed(0)
    data = SequenceDataset([Sequence(torch.arange(12.0).numpy(),
                                     (0.05 * torch.randn(12, 2, generator=rng)).numpy(),
                                     id=str(i)) for i in range(8)], ["a", "b"])
    model = _build("dkf", 2, latent_dim=2, encoder_hidden=8, transition_hidden=(8,),
                   emission_hidden=(8,), free_emission_variance=True)
    free = [m for m in model.modules() if isinstance(m, FreeVariance)]
    assert len(free) == 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, TrainConfig(lr=1e-3, variance_lr=10.0, batch_size=8,
                                         max_steps=1, progress=False, grad_clip=None))
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-3, 1e-2]
    trainer.fit(data)
    for name, p in model.named_parameters():
        step = (p.detach() - before[name]).abs().max().item()
        limit = 1e-2 if p is free[0].raw else 1e-3
        assert step <= limit * 1.001, name
        if p is free[0].raw:       # tiny residuals: the variance falls at the full rate
            assert step >= 0.99e-2
