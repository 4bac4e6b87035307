"""The DVAE contract (dynvae.models.base), checked on every model registered in
dynvae.models.registry.MODELS with its small config from contract_configs.py: a newly
registered model is covered without touching this file. The VARIANTS there (other code
paths of a registered model) run through the same checks under their own case names.

Terms compared "under one seed" are computed after resetting the global RNG; terms
whose Monte Carlo noise may be drawn in a different order (a longer padded batch, two
forecast grids of a continuous-time model) are compared in distribution, within a few
Monte Carlo standard errors estimated from repeats.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.models.registry import MODELS, model_class
from dynvae.train.augment import crop_windows
from dynvae.train.checkpoint import load_checkpoint, save_checkpoint
from tests.models.contract_configs import SMALL_CONFIGS, VARIANTS

F32, F64 = torch.float32, torch.float64
NAMES = sorted(MODELS)
CASES = NAMES + sorted(VARIANTS)
D, B, T, DT = 2, 3, 6, 0.5
LENGTHS = (6, 4, 5)
ORIGINS = (0.0, 1.0, 2.5)                         # each sequence's first time


def registered(name: str) -> str:
    """The registered model of a case name (a variant's model, else the name itself)."""
    return VARIANTS[name][0] if name in VARIANTS else name


def small_config(name: str) -> dict:
    if name in VARIANTS:
        return dict(VARIANTS[name][1])
    if name not in SMALL_CONFIGS:
        pytest.fail(f"model {name!r} is registered in dynvae.models.registry.MODELS but has no "
                    "small config in tests/models/contract_configs.py SMALL_CONFIGS")
    return dict(SMALL_CONFIGS[name])


def inputs_of(name: str) -> int:
    """U = 1 for models that take inputs (so that the inputs path is exercised), else 0."""
    return 1 if model_class(registered(name)).takes_inputs else 0


def build(name: str, U: int = 0, dtype=F64, **overrides):
    """The small model, its parameters moved off their initial values (zero input
    weights and the like would hide bugs)."""
    torch.manual_seed(0)
    config = {**small_config(name), **overrides}
    model = model_class(registered(name)).from_config(config, D, U).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def make_batch(U: int = 0, binary: bool = False, seed: int = 1) -> SequenceBatch:
    """3 sequences of lengths 6, 4, 5 on regular grids (step DT, own origins), ~25% of the
    entries missing, every first step observed."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]
    mask = (torch.rand(B, T, D, generator=g) < 0.75) & valid[..., None]
    mask[:, 0] = True
    x = torch.randn(B, T, D, generator=g, dtype=F64)
    x = torch.where(mask, (x > 0).to(F64) if binary else x, 0.0)
    t = torch.tensor(ORIGINS, dtype=F64)[:, None] + DT * torch.arange(T, dtype=F64)
    u = torch.randn(B, T, U, generator=g, dtype=F64) if U else None
    return SequenceBatch(x, mask, t, torch.tensor(LENGTHS), u)


def seeded(fn, seed: int = 7):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn()


def t_last(batch: SequenceBatch) -> torch.Tensor:
    return batch.t[torch.arange(B), batch.lengths - 1][:, None]              # (B, 1)


def future(batch: SequenceBatch, steps) -> torch.Tensor:
    """(B, H) times t_last + k DT for the steps k."""
    return t_last(batch) + DT * torch.as_tensor(steps, dtype=F64)[None]


def u_future(U: int, H: int):
    return torch.linspace(-1, 1, B * H * U, dtype=F64).reshape(B, H, U) if U else None


def outputs(model, batch: SequenceBatch) -> dict[str, torch.Tensor]:
    """Every term of the contract on ``batch``, each under one seed; predictions on the
    valid steps only."""
    U = 0 if batch.u is None else batch.u.shape[-1]
    terms = seeded(lambda: model.elbo(batch, 2))
    rec = seeded(lambda: model.reconstruct(batch))
    fc = seeded(lambda: model.forecast(batch, future(batch, [1, 2]), u_future(U, 2)))
    out = {"log_lik": terms.log_lik, "kl": terms.kl, "n_obs": terms.n_obs,
           "bound": seeded(lambda: model.log_likelihood_bound(batch, 3)),
           "rec_mean": rec.mean[batch.valid], "rec_std": rec.std[batch.valid],
           "fc_mean": fc.mean, "fc_std": fc.std}
    if terms.kl_dims is not None:
        out["kl_dims"] = terms.kl_dims
    return out


def padded(batch: SequenceBatch, extra: int, seed: int = 3) -> SequenceBatch:
    """The batch with ``extra`` more steps of garbage padding (mask False)."""
    g = torch.Generator().manual_seed(seed)
    noise = lambda v: 1e3 * torch.randn(B, extra, *v.shape[2:], generator=g, dtype=v.dtype)
    grow = lambda v: torch.cat([v, noise(v)], 1)
    mask = torch.cat([batch.mask, torch.zeros(B, extra, D, dtype=torch.bool)], 1)
    u = None if batch.u is None else grow(batch.u)
    return SequenceBatch(grow(batch.x) * mask, mask, grow(batch.t), batch.lengths, u)


def test_every_registered_model_has_a_small_config():
    assert sorted(SMALL_CONFIGS) == NAMES, "SMALL_CONFIGS must list exactly the registered models"


@pytest.mark.parametrize("name", CASES)
def test_masked_values_and_padding_content_change_no_term(name):
    U = inputs_of(name)
    model, batch = build(name, U), make_batch(U)
    g = torch.Generator().manual_seed(5)
    garbage = lambda v: 1e3 * torch.randn(v.shape, generator=g, dtype=v.dtype)
    valid = batch.valid
    u = None if batch.u is None else torch.where(valid[..., None], batch.u, garbage(batch.u))
    other = SequenceBatch(torch.where(batch.mask, batch.x, garbage(batch.x)), batch.mask,
                          torch.where(valid, batch.t, garbage(batch.t)), batch.lengths, u)
    a, b = outputs(model, batch), outputs(model, other)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-9, atol=1e-9, msg=key)


@pytest.mark.parametrize("name", CASES)
def test_a_training_window_is_scored_as_that_part_of_the_sequence(name):
    """The horizon warm-up's windows (dynvae.train.augment.crop_windows) are batches of
    subsequences: every term equals the one of the same subsequences collated anew."""
    U = inputs_of(name)
    model, batch = build(name, U), make_batch(U)
    windows = crop_windows(batch, 3, 0.5, seed=0, step=0, indices=[0, 1, 2])
    widths = windows.lengths.tolist()
    assert widths == [4, 3, 4]                # one row padded
    starts = [round((float(windows.t[b, 0]) - ORIGINS[b]) / DT) for b in range(B)]
    g = torch.Generator().manual_seed(4)
    Tw = windows.n_steps

    def part(v, b):                           # row b's window, then garbage padding
        w, a = widths[b], starts[b]
        return torch.cat([v[b, a:a + w], 1e3 * torch.randn(Tw - w, *v.shape[2:],
                                                           generator=g, dtype=v.dtype)])
    x = torch.stack([part(batch.x, b) for b in range(B)])
    mask = torch.stack([torch.cat([batch.mask[b, starts[b]:starts[b] + widths[b]],
                                   torch.zeros(Tw - widths[b], D, dtype=torch.bool)])
                        for b in range(B)])
    t = torch.stack([torch.cat([batch.t[b, starts[b]:starts[b] + widths[b]],
                                batch.t[b, starts[b] + widths[b] - 1] + 1 + torch.arange(
                                    Tw - widths[b], dtype=F64)]) for b in range(B)])
    u = None if batch.u is None else torch.stack([part(batch.u, b) for b in range(B)])
    anew = SequenceBatch(torch.where(mask, x, 0.0), mask, t, torch.tensor(widths), u)
    a, b = outputs(model, windows), outputs(model, anew)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-9, atol=1e-9, msg=key)


def mc_mean(fn, *args, repeats: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over ``repeats`` seeds of fn(*args) (B,)."""
    values = torch.stack([seeded(lambda: fn(*args), seed) for seed in range(repeats)]).double()
    return values.mean(0), values.std(0) / math.sqrt(repeats)


# The cases whose ELBOTerms.kl_dims is None, and why; for them `free_bits` is a
# ConfigError and the collapse diagnostic is skipped (docs/models.md).
KL_NOT_SPLIT = {
    "lgssm": "an exact likelihood: no KL term",
    "kvae": "a Monte Carlo KL of pseudo-observations that one Kalman smoother couples",
    "dkf-iaf": "the flow's single-sample Monte Carlo KL",
}


@pytest.mark.parametrize("name", CASES)
def test_the_kl_splits_over_latent_dimensions(name):
    """ELBOTerms.kl_dims (B, Z'): the KL of each latent dimension, whose rows add up to
    the KL term, none negative and none identically 0 on this perturbed model, with a
    graph to the parameters (free bits train through it). None only for KL_NOT_SPLIT."""
    U = inputs_of(name)
    model, batch = build(name, U), make_batch(U)
    terms = seeded(lambda: model.elbo(batch, 2))
    if name in KL_NOT_SPLIT:
        assert terms.kl_dims is None, f"{name} now splits its KL: remove it from KL_NOT_SPLIT"
        return
    assert terms.kl_dims is not None, f"{name} reports no ELBOTerms.kl_dims"
    kl_dims = terms.kl_dims
    assert kl_dims.dim() == 2 and kl_dims.shape[0] == B
    torch.testing.assert_close(kl_dims.sum(-1), terms.kl, rtol=1e-12, atol=1e-12)
    assert bool((kl_dims >= 0).all()) and bool((kl_dims.sum(0) > 0).all()), kl_dims
    labels = model.kl_dim_labels(kl_dims.shape[-1])          # the collapse plot's legend
    assert len(set(labels)) == kl_dims.shape[-1] and all(isinstance(s, str) for s in labels)
    kl_dims.sum().backward()                          # free bits train through kl_dims
    assert any(p.grad is not None and bool(p.grad.any()) for p in model.parameters())


@pytest.mark.parametrize("name", CASES)
def test_longer_padding_changes_no_term(name):
    model, batch = build(name), make_batch()
    longer = padded(batch, 3)
    assert torch.equal(model.elbo(longer).n_obs, model.elbo(batch).n_obs)
    for term in (lambda b: model.elbo(b, 8).log_lik, lambda b: model.elbo(b, 8).kl,
                 lambda b: model.log_likelihood_bound(b, 4)):
        (m1, s1), (m2, s2) = mc_mean(term, batch), mc_mean(term, longer)
        assert bool(((m1 - m2).abs() <= 5 * (s1 ** 2 + s2 ** 2).sqrt() + 1e-8).all()), (m1, m2)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", CASES)
def test_dtype_is_kept_and_results_carry_no_graph(name, dtype):
    U = inputs_of(name)
    model, batch = build(name, U, dtype), make_batch(U)                      # float64 data
    terms = model.elbo(batch)
    terms.loss().backward()
    term_values = [t for t in terms if t is not None]      # kl_dims: None where not given
    results = [*term_values, model.log_likelihood_bound(batch, 2),
               *model.reconstruct(batch)[1:],
               *model.forecast(batch, future(batch, [1, 2]), u_future(U, 2))[1:],
               model.sample(3, torch.arange(4.0), None if not U else torch.ones(4, U))]
    for i, r in enumerate(results):
        assert r.dtype == dtype and bool(torch.isfinite(r).all()), i
    assert not any(r.requires_grad for r in results[len(term_values):]), \
        "results must come without grad"
    assert model.sample(3, torch.arange(4.0), None if not U else torch.ones(4, U)).shape \
        == (3, 4, D)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CASES)
def test_runs_on_the_device_it_is_moved_to(name, device):
    U = inputs_of(name)
    model, batch = build(name, U, F32).to(device), make_batch(U)             # batch on cpu
    model.elbo(batch).loss().backward()
    uf = u_future(U, 2)
    results = [model.log_likelihood_bound(batch, 2), model.reconstruct(batch).mean,
               model.forecast(batch, future(batch, [1, 2]),
                              None if uf is None else uf.to(device)).mean,
               model.sample(2, torch.arange(3.0, device=device),
                            None if not U else torch.ones(3, U, device=device))]
    assert all(r.device.type == device for r in results)
    assert all(p.grad is None or p.grad.device.type == device for p in model.parameters())


@pytest.mark.parametrize("name", CASES)
def test_forecast_honours_the_spacing_of_t_future(name):
    """A time's forecast does not depend on the other times asked for, and t_last + 3 dt
    is not the one-step forecast. Discrete-time models: exact under one seed, and off-grid
    times are an error. Continuous-time models: in distribution."""
    cls = model_class(registered(name))
    many = {} if not cls.continuous_time else {"n_predict_samples": 2000}
    if cls.continuous_time and "n_predict_samples" not in {
            f.name for f in dataclasses.fields(cls.Config)}:
        pytest.fail(f"continuous-time model {name!r} needs n_predict_samples for this test")
    model, batch = build(name, **many), make_batch()
    alone = seeded(lambda: model.forecast(batch, future(batch, [3])))
    grid = seeded(lambda: model.forecast(batch, future(batch, [1, 3])))
    one_step = seeded(lambda: model.forecast(batch, future(batch, [1])))
    assert torch.equal(alone.t, future(batch, [3]).to(alone.t))
    assert alone.mean.shape == (B, 1, D) and grid.mean.shape == (B, 2, D)
    assert not torch.allclose(alone.mean, one_step.mean, rtol=0, atol=1e-6)
    if not cls.continuous_time:
        torch.testing.assert_close(alone.mean, grid.mean[:, 1:], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(alone.std, grid.std[:, 1:], rtol=1e-9, atol=1e-9)
        with pytest.raises(DataError, match="discrete-time"):
            model.forecast(batch, future(batch, [1.5]))
    else:
        se = alone.std * math.sqrt(2 / many["n_predict_samples"])
        assert bool(((alone.mean - grid.mean[:, 1:]).abs() < 6 * se).all())
        torch.testing.assert_close(alone.std, grid.std[:, 1:], rtol=0.15, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_sample_and_forecast_with_and_without_inputs(name):
    t = torch.arange(4.0, dtype=F64)
    plain, batch = build(name), make_batch()
    assert plain.sample(3, t).shape == (3, 4, D)
    with pytest.raises(DataError, match="without control inputs"):
        plain.sample(3, t, torch.ones(4, 1))
    with pytest.raises(DataError, match="without control inputs"):
        plain.forecast(batch, future(batch, [1, 2]), torch.ones(B, 2, 1))
    if not model_class(registered(name)).takes_inputs:
        with pytest.raises(ConfigError):
            model_class(registered(name)).from_config(small_config(name), D, 1)
        return
    model, batch = build(name, 1), make_batch(1)
    u = torch.linspace(-1, 1, 4, dtype=F64)[:, None]
    a = seeded(lambda: model.sample(3, t, u))
    assert a.shape == (3, 4, D)
    torch.testing.assert_close(seeded(lambda: model.sample(3, t, u.expand(3, 4, 1))), a)
    assert not torch.allclose(seeded(lambda: model.sample(3, t, u + 3)), a), "u is ignored"
    for bad in (None, torch.ones(5, 1), torch.ones(2, 4, 1)):
        with pytest.raises(DataError, match="control inputs"):
            model.sample(3, t, bad)
    with pytest.raises(DataError, match="u_future"):
        model.forecast(batch, future(batch, [1, 2]))
    fc = model.forecast(batch, future(batch, [1, 2]), u_future(1, 2))
    moved = model.forecast(batch, future(batch, [1, 2]), u_future(1, 2) + 3)
    assert not torch.allclose(fc.mean, moved.mean), "u_future is ignored"


@pytest.mark.parametrize("name", CASES)
def test_iwae_is_above_the_elbo_on_average_and_grows_with_k(name):
    model, batch = build(name), make_batch()
    with torch.no_grad():
        elbo, s0 = mc_mean(lambda: model.elbo(batch, 8).elbo().sum()[None], repeats=8)
        bound = lambda k: model.log_likelihood_bound(batch, k).sum()[None]
        bounds = [mc_mean(bound, k, repeats=8) for k in (1, 8, 64)]
    # E[IWAE_1] = E[ELBO] <= E[IWAE_8] <= E[IWAE_64] (Burda et al. 2016, Theorem 1)
    (m1, s1), (m8, s8), (m64, s64) = bounds
    tol = lambda a, b: 4 * float((a ** 2 + b ** 2).sqrt()) + 1e-8
    assert abs(float(m1 - elbo)) <= tol(s1, s0)
    assert float(m8 - m1) >= -tol(s8, s1) and float(m64 - m8) >= -tol(s64, s8)
    assert float(m64) >= float(elbo) - tol(s64, s0)


@pytest.mark.parametrize("name", CASES)
def test_every_parameter_gets_a_finite_gradient_that_matches_finite_differences(name):
    """Directional gradient check in float64: for each parameter tensor p and a random
    direction v, <grad, v> against the central difference of the loss (the noise is
    fixed by the seed, so the reparametrised loss is a smooth function of p)."""
    U = inputs_of(name)
    model, batch = build(name, U), make_batch(U)
    loss = lambda: seeded(lambda: model.elbo(batch, 2).loss())
    loss().backward()
    g = torch.Generator().manual_seed(0)
    eps = 1e-6
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), pname
        v = torch.randn(p.shape, generator=g, dtype=p.dtype)
        with torch.no_grad():
            p.add_(eps * v)
            up = float(loss())
            p.sub_(2 * eps * v)
            down = float(loss())
            p.add_(eps * v)
        numeric, analytic = (up - down) / (2 * eps), float((p.grad * v).sum())
        assert abs(numeric - analytic) <= 1e-6 + 1e-4 * abs(numeric), (pname, numeric, analytic)


@pytest.mark.parametrize("name", CASES)
def test_save_load_gives_identical_outputs(name, tmp_path):
    U = inputs_of(name)
    model, batch = build(name, U), make_batch(U)
    config = json.loads(json.dumps(dataclasses.asdict(model.config)))     # as in config.json
    save_checkpoint(tmp_path / "model.pt", {"model": registered(name),
                                            "model_config": config,
                                            "state_dict": model.state_dict()})
    payload = load_checkpoint(tmp_path / "model.pt")
    torch.manual_seed(123)                                      # a different initialisation
    loaded = model_class(payload["model"]).from_config(payload["model_config"], D, U).to(F64)
    loaded.load_state_dict(payload["state_dict"])
    a, b = outputs(model, batch), outputs(loaded, batch)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    t = torch.arange(4.0)
    u = None if not U else torch.ones(4, U)
    assert torch.equal(seeded(lambda: model.sample(2, t, u)),
                       seeded(lambda: loaded.sample(2, t, u)))


def bad_calls(model, batch: SequenceBatch, continuous: bool):
    """(description, call, error type) of bad inputs every model must reject."""
    U = 0 if batch.u is None else batch.u.shape[-1]
    uf = lambda H: u_future(U, H)
    tf = future(batch, [1, 2])
    nan = tf.clone()
    nan[1, 1] = math.nan
    wide = SequenceBatch(torch.zeros(B, T, D + 1, dtype=F64), batch.mask[..., :1].expand(
        B, T, D + 1).clone(), batch.t, batch.lengths, batch.u)
    calls = [
        ("data of the wrong width", lambda: model.elbo(wide), DataError),
        ("n_samples = 0", lambda: model.elbo(batch, 0), ConfigError),
        ("k = 0", lambda: model.log_likelihood_bound(batch, 0), ConfigError),
        ("t_future of the wrong batch size", lambda: model.forecast(batch, tf[:2], None
                                                                    if not U else uf(2)[:2]),
         DataError),
        ("1-d t_future", lambda: model.forecast(batch, tf[0], uf(2)), DataError),
        ("t_future before the last time", lambda: model.forecast(batch, tf - 10, uf(2)),
         DataError),
        ("decreasing t_future", lambda: model.forecast(batch, tf.flip(1), uf(2)), DataError),
        ("NaN in t_future", lambda: model.forecast(batch, nan, uf(2)), DataError),
        ("2-d sample times", lambda: model.sample(2, torch.zeros(2, 3), None), DataError),
        ("decreasing sample times", lambda: model.sample(2, torch.tensor([0.0, 2.0, 1.0]),
                                                          None if not U else torch.ones(3, U)),
         DataError),
        ("n = 0 samples", lambda: model.sample(0, torch.arange(3.0),
                                               None if not U else torch.ones(3, U)), DataError),
    ]
    if not continuous:
        calls.append(("t_future off the grid", lambda: model.forecast(
            batch, future(batch, [1, 2.5]), uf(2)), DataError))

    return calls


@pytest.mark.parametrize("name", CASES)
def test_a_discrete_model_warns_of_unevenly_spaced_sample_times(name):
    """A discrete-time model draws at consecutive steps: sample times with uneven steps
    are labels it cannot honour, said in a warning (a continuous-time model uses them)."""
    U = inputs_of(name)
    model = build(name, U)
    u = None if not U else torch.ones(3, U)
    uneven, even = torch.tensor([0.0, 1.0, 5.0]), torch.tensor([0.0, 2.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.sample(2, even, u)
        if model_class(registered(name)).continuous_time:
            model.sample(2, uneven, u)
            return
    with pytest.warns(UserWarning, match="not evenly spaced"):
        model.sample(2, uneven, u)


@pytest.mark.parametrize("name", CASES)
def test_each_bad_input_gets_one_clear_line(name):
    U = inputs_of(name)
    model, batch = build(name, U), make_batch(U)
    continuous = model_class(registered(name)).continuous_time
    for what, call, error in bad_calls(model, batch, continuous):
        with pytest.raises(error) as info:
            call()
        assert "\n" not in str(info.value) and str(info.value), what
    with pytest.raises(ConfigError, match="unknown"):
        model_class(registered(name)).from_config({**small_config(name), "no_such_key": 1}, D)


@pytest.mark.parametrize("name", CASES)
def test_a_bernoulli_observation_is_reported_as_such(name):
    cls = model_class(registered(name))
    if "observation" not in {f.name for f in dataclasses.fields(cls.Config)}:
        assert build(name).observation_family == "gaussian"
        return
    model = build(name, observation="bernoulli")
    assert model.observation_family == "bernoulli"
    binary = make_batch(binary=True)
    assert bool(torch.isfinite(model.elbo(binary).elbo()).all())
    rec = model.reconstruct(binary).mean
    assert bool(((rec >= 0) & (rec <= 1)).all())
    assert set(model.sample(3, torch.arange(4.0)).unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(DataError, match=r"\[0, 1\]") as info:
        model.elbo(make_batch())
    assert "\n" not in str(info.value)
