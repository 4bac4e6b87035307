import csv
import math

import pytest
import torch

from dynvae.errors import CheckpointError, ConfigError
from dynvae.train.augment import crop_windows, drop_observed, window_length
from dynvae.train.batching import epoch_batches
from dynvae.train.checkpoint import load_checkpoint
from dynvae.train.history import kl_weight
from dynvae.train.metrics import evaluate_elbo
from dynvae.train.trainer import TrainConfig, Trainer

from .tiny_model import ListDataset, RecordingDVAE, TinyLinearDVAE, make_data


def _model(seed=0, analytic=False, D=3):
    torch.manual_seed(seed)
    return TinyLinearDVAE(D, 2, analytic=analytic).double()


def _config(**kw):
    base = dict(lr=0.02, batch_size=5, max_epochs=50, eval_every=3, patience=None,
                checkpoint_every=4, seed=3, dtype="float64", progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_analytic_elbo_matches_monte_carlo():
    batch = ListDataset(make_data(4)).to_batch([0, 1, 2, 3], dtype=torch.float64)
    model = _model(analytic=True)
    exact = model.elbo(batch).elbo()
    model.analytic = False
    torch.manual_seed(1)
    mc = model.elbo(batch, n_samples=4000).elbo()
    assert torch.allclose(mc, exact, rtol=0, atol=0.05 * exact.abs().max().item() / 20)


def test_training_improves_validation_bound(tmp_path):
    data = make_data(30)
    train, val = ListDataset(data[:24]), ListDataset(data[24:])
    model = _model()
    before = evaluate_elbo(model, val, seed=0).per_step
    result = Trainer(model, _config(max_steps=60, eval_every=10), tmp_path).fit(train, val)
    after = evaluate_elbo(model, val, seed=0).per_step
    assert result.stopped == "max_steps" and len(result.history) == 60
    assert after > before + 1.0
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 61))
    assert rows[9]["val_elbo_per_step"] != "" and rows[8]["val_elbo_per_step"] == ""
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_matches_uninterrupted_run(tmp_path, num_workers):
    data = make_data(30)
    train, val = ListDataset(data[:23]), ListDataset(data[23:])
    cfg = dict(kl_anneal_steps=7, missing_rate=0.2, n_samples=2, num_workers=num_workers,
               horizon_warmup_steps=12, horizon_start=4)      # resumed within both warm-ups
    full = _model()
    Trainer(full, _config(max_steps=16, **cfg), tmp_path / "a").fit(train, val)
    half = _model()
    first = Trainer(half, _config(max_steps=8, **cfg), tmp_path / "b").fit(train, val)
    assert first.stopped == "max_steps"
    # a fresh model with another init: everything must come from the checkpoint
    resumed = Trainer.resume(tmp_path / "b", _model(seed=5), train, val,
                             config=_config(max_steps=16, **cfg))
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 16
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["best_step"] == b["best_step"] and a["best_val"] == b["best_val"]
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    assert len(resumed.history) == 16


def test_best_parameters_are_a_copy_and_restored(tmp_path):
    data = make_data(30)
    train, val = ListDataset(data[:24]), ListDataset(data[24:])
    model = _model(analytic=True)
    cfg = _config(lr=0.3, max_steps=36, eval_every=2, checkpoint_every=36)
    result = Trainer(model, cfg, tmp_path).fit(train, val)
    vals = [r["val_elbo_per_step"] for r in result.history if "val_elbo_per_step" in r]
    assert result.best_val == max(vals)
    assert result.best_step != 36 and vals[-1] < result.best_val  # the last is not the best
    # the model now holds the best parameters (not the last ones) ...
    assert evaluate_elbo(model, val, seed=cfg.seed).per_step == pytest.approx(result.best_val,
                                                                             abs=1e-12)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert best["step"] == result.best_step
    for key, value in model.state_dict().items():
        assert torch.equal(value, best["model"][key])
    assert any(not torch.equal(last["model"][k], best["model"][k]) for k in best["model"])


def test_early_stopping(tmp_path):
    data = make_data(30)
    train, val = ListDataset(data[:24]), ListDataset(data[24:])
    cfg = _config(lr=0.3, max_steps=400, eval_every=1, patience=2)
    result = Trainer(_model(analytic=True), cfg, tmp_path).fit(train, val)
    assert result.stopped == "early_stopping"
    assert len(result.history) < 400
    assert len(result.history) - result.best_step == 2


class _Exploding(TinyLinearDVAE):
    """Returns a NaN loss from its 6th call on."""

    calls = 0

    def elbo(self, batch, n_samples=1):
        terms = super().elbo(batch, n_samples)
        type(self).calls += 1
        if type(self).calls >= 6:
            return terms._replace(log_lik=terms.log_lik * math.nan)
        return terms


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    _Exploding.calls = 0
    torch.manual_seed(0)
    model = _Exploding(3).double()
    train = ListDataset(make_data(20))
    result = Trainer(model, _config(max_steps=50, checkpoint_every=2), tmp_path).fit(train)
    assert result.stopped == "non_finite"
    assert "step 6" in result.message and "non-finite" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(_model(), _config(), tmp_path).fit(ListDataset(make_data(6)), resume=True)


@pytest.mark.parametrize("bad", [dict(lr=0), dict(batch_size=0), dict(missing_rate=1.0),
                                 dict(dtype="float16"), dict(device="tpu"),
                                 dict(max_steps=-1), dict(beta=0.0), dict(average_decay=1.0),
                                 dict(average_decay=-0.1)])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_kl_weight_and_epoch_batches():
    assert [kl_weight(s, 4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert kl_weight(0, 0) == 1.0
    assert [kl_weight(s, 2, final=0.8) for s in range(4)] == [0.0, 0.4, 0.8, 0.8]
    assert kl_weight(5, 0, final=0.8) == 0.8
    b0 = epoch_batches(11, 4, seed=1, epoch=0)
    assert [len(b) for b in b0] == [4, 4, 3]
    assert sorted(sum(b0, [])) == list(range(11))
    assert b0 == epoch_batches(11, 4, seed=1, epoch=0)
    assert b0 != epoch_batches(11, 4, seed=1, epoch=1)


def _lengths_of(batches, lengths):
    return [[lengths[i] for i in b] for b in batches]


def test_epoch_batches_group_lengths():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (203,), generator=gen).tolist()
    plain = epoch_batches(203, 8, seed=2, epoch=3)
    grouped = epoch_batches(203, 8, seed=2, epoch=3, lengths=lengths)
    # a partition into ceil(n / batch) batches, at most one smaller, reproducible, new
    # batches every epoch
    assert sorted(sum(grouped, [])) == list(range(203))
    assert len(grouped) == math.ceil(203 / 8)
    assert sum(len(b) < 8 for b in grouped) == 1
    assert grouped == epoch_batches(203, 8, seed=2, epoch=3, lengths=lengths)
    assert grouped != epoch_batches(203, 8, seed=2, epoch=4, lengths=lengths)
    # less padding: each batch runs to its longest sequence
    padded = lambda bs: sum(max(ls) * len(ls) for ls in _lengths_of(bs, lengths))
    assert padded(grouped) < 0.8 * padded(plain)
    # within one pool (here the whole set: 64 = 8 batches of 8) batches cover disjoint
    # ranges of lengths: sorted then cut
    distinct = torch.randperm(64, generator=gen).tolist()
    pool = _lengths_of(epoch_batches(64, 8, seed=0, epoch=0, lengths=distinct), distinct)
    ranges = sorted((min(ls), max(ls)) for ls in pool)
    assert all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))
    # equal lengths: the plain permutation's batches
    assert epoch_batches(203, 8, seed=2, epoch=3, lengths=[7] * 203) == plain
    with pytest.raises(ValueError, match="202 lengths for 203"):
        epoch_batches(203, 8, seed=2, epoch=3, lengths=lengths[1:])


def _ragged(n, seed=0):
    """A SequenceDataset of make_data's sequences cut to lengths 4..12."""
    from dynvae.data.dataset import Sequence, SequenceDataset
    x = make_data(n, T=12, seed=seed).numpy()
    lengths = [4 + (7 * i) % 9 for i in range(n)]
    return SequenceDataset([Sequence(t=range(T), x=x[i, :T], id=str(i))
                            for i, T in enumerate(lengths)], ["a", "b", "c"])


@pytest.mark.parametrize("group", [True, False])
def test_trainer_batches_by_length_and_resumes_exactly(tmp_path, monkeypatch, group):
    import dynvae.train.trainer as trainer_module
    train, val = _ragged(23), _ragged(7, seed=1)
    seen = []
    real = trainer_module.local_batches

    def recording(dataset, batches, *args, **kw):
        seen.append([list(b) for b in batches])
        return real(dataset, batches, *args, **kw)
    monkeypatch.setattr(trainer_module, "local_batches", recording)
    cfg = dict(group_lengths=group, max_epochs=3)
    Trainer(_model(), _config(**cfg), tmp_path / "a").fit(train, val)
    expect = [epoch_batches(23, 5, 3, epoch, train.lengths if group else None)
              for epoch in range(3)]
    assert seen == expect
    # interrupted after 7 steps (mid-epoch) and resumed: the same parameters
    Trainer(_model(), _config(max_steps=7, **cfg), tmp_path / "b").fit(train, val)
    Trainer.resume(tmp_path / "b", _model(seed=5), train, val, config=_config(**cfg))
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 15
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_drop_observed_rate_and_batch_independence():
    data = ListDataset(make_data(40, T=30, D=4))
    batch = data.to_batch(list(range(40)))
    dropped = drop_observed(batch, 0.3, seed=0, step=5, indices=list(range(40)))
    assert not (dropped.mask & ~batch.mask).any()
    rate = 1 - dropped.mask.sum() / batch.mask.sum()
    assert abs(float(rate) - 0.3) < 0.03
    assert dropped.mask.any(dim=(1, 2)).all()
    part = drop_observed(data.to_batch([7, 3]), 0.3, seed=0, step=5, indices=[7, 3])
    assert torch.equal(part.mask, dropped.mask[[7, 3]])


def test_window_length_grows_geometrically_to_the_whole_sequence():
    assert [window_length(160, 10, p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)] == \
        [10, 20, 40, 80, 160]
    assert window_length(7, 10, 0.0) == 7 and window_length(160, 10, 2.0) == 160
    assert window_length(160, 10, -1.0) == 10


def test_crop_windows_cuts_each_sequence_to_a_window_of_its_own():
    torch.manual_seed(0)
    B, T, D = 6, 40, 3
    x = torch.randn(B, T, D, dtype=torch.float64)
    x[1, 25:] = float("nan")                            # a shorter sequence (25 steps)
    x[2, :, :] = float("nan")
    x[2, 30, 1] = 1.5                                   # one observed entry, at step 30
    from dynvae.data.batch import SequenceBatch
    t = torch.cumsum(torch.rand(B, T, dtype=torch.float64) + 0.1, 1)    # irregular times
    batch = SequenceBatch.from_tensor(x, t=t)
    batch = SequenceBatch(x=batch.x, mask=batch.mask, t=batch.t,
                          lengths=torch.tensor([40, 25, 40, 40, 40, 40]),
                          u=torch.randn(B, T, 2, dtype=torch.float64))
    indices = [11, 12, 13, 14, 15, 16]
    out = crop_windows(batch, 10, 0.5, seed=0, step=3, indices=indices)
    widths = out.lengths.tolist()
    assert widths[0] == window_length(40, 10, 0.5) == 20 and widths[1] == 16
    assert widths[2] in (20, 40)                        # its window, or the whole sequence
    assert out.mask[2].any()                            # never a window without data
    for b in range(B):
        w = widths[b]
        match = [a for a in range(int(batch.lengths[b]) - w + 1)
                 if torch.equal(out.t[b, :w], batch.t[b, a:a + w])]
        assert len(match) == 1                          # a contiguous run of the sequence
        a = match[0]
        assert torch.equal(out.x[b, :w], batch.x[b, a:a + w])
        assert torch.equal(out.mask[b, :w], batch.mask[b, a:a + w])
        assert torch.equal(out.u[b, :w], batch.u[b, a:a + w])
        assert not out.mask[b, w:].any() and (out.x[b, w:] == 0).all()
        assert (out.t[b, 1:] > out.t[b, :-1]).all()      # padding continues the times
    # the same windows whatever the batch holds (seeded per sequence)
    part = crop_windows(SequenceBatch(x=batch.x[[4, 0]], mask=batch.mask[[4, 0]],
                                      t=batch.t[[4, 0]], lengths=batch.lengths[[4, 0]],
                                      u=batch.u[[4, 0]]), 10, 0.5, 0, 3, [15, 11])
    assert part.lengths.tolist() == [widths[4], widths[0]]
    assert torch.equal(part.t[0, :widths[4]], out.t[4, :widths[4]])
    again = crop_windows(batch, 10, 0.5, seed=0, step=4, indices=indices)
    assert not torch.equal(again.t[:, 0], out.t[:, 0])  # another step, other windows
    full = crop_windows(batch, 10, 1.0, seed=0, step=3, indices=indices)
    assert torch.equal(full.lengths, batch.lengths) and torch.equal(full.x, batch.x)
    assert torch.equal(full.t[batch.valid], batch.t[batch.valid])


def test_a_window_holding_the_one_observation_is_kept_at_either_end():
    from dynvae.data.batch import SequenceBatch
    x = torch.full((1, 40, 2), float("nan"), dtype=torch.float64)
    x[0, 20, 1] = 0.5                                   # the one observed entry, step 20
    batch = SequenceBatch.from_tensor(x)
    offsets = set()
    for step in range(200):
        out = crop_windows(batch, 10, 0.5, seed=0, step=step, indices=[0])
        w = int(out.lengths[0])
        if w == 40:                                     # fell back to the whole sequence
            assert torch.equal(out.mask, batch.mask)
            continue
        assert w == 20 and int(out.mask[0].sum()) == 1  # a window holding the observation
        offsets.add(int(out.mask[0].any(-1).nonzero()[0, 0]))
    assert {0, 19} <= offsets                           # at its first and at its last step


def test_horizon_warm_up_trains_on_windows_then_whole_sequences():
    torch.manual_seed(0)
    model = RecordingDVAE(3, 2).double()
    data = ListDataset(make_data(10, T=40))
    Trainer(model, _config(max_steps=8, max_epochs=100, horizon_warmup_steps=4,
                           horizon_start=5, batch_size=10)).fit(data)
    seen = [lengths for _, lengths in model.seen]
    assert [max(w) for w in seen[:4]] == [window_length(40, 5, s / 4) for s in range(4)]
    assert all(w == [40] * 10 for w in seen[4:]) and len(seen) == 8
    with pytest.raises(ConfigError, match="horizon_start"):
        TrainConfig(horizon_start=0)
    with pytest.raises(ConfigError, match="horizon_warmup_steps"):
        TrainConfig(horizon_warmup_steps=-1)


def test_time_budget_stops_training():
    cfg = _config(max_seconds=0.3, max_epochs=10_000)
    result = Trainer(_model(), cfg).fit(ListDataset(make_data(10)))
    assert result.stopped == "max_seconds"
    assert result.history[-1]["seconds"] >= 0.3


def test_cpu_time_budget_stops_training():
    cfg = _config(max_cpu_seconds=0.3, max_epochs=10_000)
    result = Trainer(_model(), cfg).fit(ListDataset(make_data(10)))
    assert result.stopped == "max_cpu_seconds"
    cpu = [row["cpu_seconds"] for row in result.history]
    assert cpu[-1] >= 0.3 > cpu[-2] and cpu == sorted(cpu)
    with pytest.raises(ConfigError, match="max_cpu_seconds"):
        _config(max_cpu_seconds=0.0)


class _AnomalyProbe(TinyLinearDVAE):
    seen: list = []

    def elbo(self, batch, n_samples=1):
        type(self).seen.append(torch.is_anomaly_enabled())
        return super().elbo(batch, n_samples)


def test_anomaly_detection_is_off_while_training():
    _AnomalyProbe.seen = []
    torch.manual_seed(0)
    model = _AnomalyProbe(3).double()
    with torch.autograd.set_detect_anomaly(True):
        Trainer(model, _config(max_steps=2)).fit(ListDataset(make_data(10)))
    assert _AnomalyProbe.seen == [False, False]


def test_beta_weights_the_kl_of_the_training_loss():
    """One step with beta = 0.3: the recorded loss is -(log_lik - 0.3 kl) per entry of the
    batch, evaluated at the starting parameters."""
    data = make_data(4)
    model, start = _model(analytic=True), _model(analytic=True)
    result = Trainer(model, _config(beta=0.3, batch_size=4, max_steps=1)).fit(ListDataset(data))
    row = result.history[0]
    assert row["beta"] == 0.3
    with torch.no_grad():
        terms = start.elbo(ListDataset(data).to_batch(range(4), dtype=torch.float64))
    expected = -(terms.log_lik - 0.3 * terms.kl).sum() / terms.n_obs.sum()
    assert abs(row["loss"] - float(expected)) < 1e-10
    assert float(terms.kl.sum()) > 0  # the KL term is present, so beta matters


@pytest.mark.parametrize("progress", [True, False])
def test_validation_status_lines_when_the_bar_is_not_drawn(tmp_path, capsys, progress):
    # Standard error is captured (not a terminal): no bar, one line per validation.
    data = make_data(30)
    train, val = ListDataset(data[:24]), ListDataset(data[24:])
    result = Trainer(_model(), _config(max_steps=30, eval_every=10, progress=progress),
                     tmp_path).fit(train, val)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train:")]
    if not progress:
        assert lines == []
        return
    assert [ln.split(",")[0] for ln in lines] == [f"train: step {k}/30" for k in (10, 20, 30)]
    values = [r["val_elbo_per_step"] for r in result.history if "val_elbo_per_step" in r]
    assert len(values) == 3
    for line, value in zip(lines, values, strict=True):
        assert f"validation ELBO/step {value:.4f}" in line
    assert f"(best {max(values):.4f} at step" in lines[-1]
    # without validation data: a line with the running loss every eval_every steps
    Trainer(_model(), _config(max_steps=30, eval_every=10, progress=True),
            tmp_path / "no-val").fit(train)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train:")]
    assert [ln.split(",")[0] for ln in lines] == [f"train: step {k}/30" for k in (10, 20, 30)]
    assert all(", loss " in ln and "validation" not in ln for ln in lines)


def test_status_names_no_step_total_the_time_budget_will_not_reach():
    from dynvae.train.trainer import _BudgetBar
    bar = _BudgetBar(7_000_000, 20.0, 0, enabled=False)       # no epoch limit, 20 s
    assert bar._where(100, 19.6) == "step 100, 20/20 s"
    steps = _BudgetBar(200, 600.0, 0, enabled=False)           # steps end first
    assert steps._where(100, 30.0) == "step 100/200, 30/600 s"
    plain = _BudgetBar(200, None, 0, enabled=False)
    assert plain._where(100, 30.0) == "step 100/200, 30 s"
    for b in (bar, steps, plain):
        b.close()


def test_lr_factor_of_the_schedules():
    from dynvae.train.trainer import LR_FLOOR, lr_factor
    assert lr_factor("constant", 0.7) == 1.0
    assert lr_factor("cosine", 0.0) == 1.0
    assert lr_factor("cosine", 1.0) == pytest.approx(LR_FLOOR, abs=1e-15)
    assert lr_factor("cosine", 0.5) == pytest.approx(LR_FLOOR + (1 - LR_FLOOR) / 2)
    assert lr_factor("cosine", 3.0) == lr_factor("cosine", 1.0)
    with pytest.raises(ConfigError, match="lr_schedule"):
        _config(lr_schedule="linear")


def test_cosine_schedule_over_the_steps_scales_every_group():
    model = _model()
    cfg = _config(max_steps=20, lr_schedule="cosine", variance_lr=4.0)
    trainer = Trainer(model, cfg)
    trainer.optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))],
                                       "lr": cfg.lr * 4.0, "base_lr": cfg.lr * 4.0})
    result = trainer.fit(ListDataset(make_data(10)))
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(cfg.lr)                           # progress 0 at step 1
    last = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 19 / 20))      # progress 19/20
    assert lrs[-1] == pytest.approx(cfg.lr * last)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    groups = trainer.optimizer.param_groups
    assert groups[-1]["lr"] / groups[0]["lr"] == pytest.approx(4.0)
    constant = Trainer(_model(), _config(max_steps=20)).fit(ListDataset(make_data(10)))
    assert {row["lr"] for row in constant.history} == {0.02}


def test_cosine_schedule_follows_the_time_budget_when_it_ends_first():
    trainer = Trainer(_model(), _config(max_seconds=120.0, max_epochs=10,
                                        lr_schedule="cosine"))
    trainer._clocks = (60.0, 1.0)                                   # wall, CPU seconds
    assert trainer._progress(5, 100) == 0.5                         # time ends first
    assert trainer._progress(80, 100) == 0.8                        # steps end first
    trainer._clocks = (600.0, 1.0)
    assert trainer._progress(5, 100) == 1.0
    cpu = Trainer(_model(), _config(max_cpu_seconds=10.0, lr_schedule="cosine"))
    cpu._clocks = (60.0, 2.5)
    assert cpu._progress(5, 100) == 0.25
    result = Trainer(_model(), _config(max_seconds=0.5, max_epochs=10_000,
                                       lr_schedule="cosine")).fit(ListDataset(make_data(10)))
    lrs = [row["lr"] for row in result.history]
    assert result.stopped == "max_seconds" and lrs[0] == pytest.approx(0.02, rel=1e-4)
    assert 0.02 * 0.05 <= lrs[-1] < 0.02 * 0.2           # near the floor as time runs out


class _Crash(TinyLinearDVAE):
    """Raises at the given elbo call: a run killed between two checkpoints."""

    def __init__(self, *args, crash_at=None, **kw):
        super().__init__(*args, **kw)
        self.calls, self.crash_at = 0, crash_at

    def elbo(self, batch, n_samples=1):
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt
        return super().elbo(batch, n_samples)


def test_resume_of_a_killed_run_keeps_the_schedule(tmp_path):
    data = make_data(30)
    train = ListDataset(data[:23])
    cfg = _config(max_steps=16, lr_schedule="cosine", eval_every=100)

    def model(crash_at=None):
        torch.manual_seed(0)
        return _Crash(3, 2, crash_at=crash_at).double()
    full = Trainer(model(), cfg, tmp_path / "a").fit(train)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model(crash_at=11), cfg, tmp_path / "b").fit(train)  # last.pt at step 8
    resumed = Trainer.resume(tmp_path / "b", model(), train)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]


def _trajectory(trainer):
    """Records the model's floating-point state after every optimizer step."""
    seen = [_params(trainer.model)]
    step = trainer.optimizer.step

    def recorded(*args, **kw):
        out = step(*args, **kw)
        seen.append(_params(trainer.model))
        return out
    trainer.optimizer.step = recorded
    return seen


def _expected_average(seen, decay):
    """a_0 = theta_0, a_{s+1} = d_s a_s + (1 - d_s) theta_{s+1},
    d_s = min(decay, (1 + s) / (10 + s)), computed by hand."""
    avg = dict(seen[0])
    for s, theta in enumerate(seen[1:]):
        d = min(decay, (1 + s) / (10 + s))
        avg = {k: d * avg[k] + (1 - d) * theta[k] for k in avg}
    return avg


def test_parameter_average_is_the_final_model_and_leaves_the_iterates_alone():
    train = ListDataset(make_data(20))
    plain = Trainer(_model(), _config(max_steps=25)).fit(train)
    trainer = Trainer(_model(), _config(max_steps=25, average_decay=0.8))
    seen = _trajectory(trainer)
    result = trainer.fit(train)
    # averaging does not change the optimisation: the same losses step by step
    assert [r["loss"] for r in result.history] == [r["loss"] for r in plain.history]
    expected = _expected_average(seen, 0.8)
    final = _params(trainer.model)
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=1e-12)
    # and the average is not the last iterate
    assert max((final[k] - seen[-1][k]).abs().max() for k in final) > 1e-3


def test_validation_and_best_parameters_use_the_average(tmp_path):
    data = make_data(30)
    train, val = ListDataset(data[:24]), ListDataset(data[24:])
    cfg = _config(lr=0.3, max_steps=24, eval_every=4, checkpoint_every=24, average_decay=0.7)
    trainer = Trainer(_model(analytic=True), cfg, tmp_path)
    seen = _trajectory(trainer)
    result = trainer.fit(train, val)
    vals = {r["step"]: r["val_elbo_per_step"] for r in result.history
            if "val_elbo_per_step" in r}
    probe = _model(analytic=True)
    for step, value in vals.items():
        probe.load_state_dict(_expected_average(seen[:step + 1], 0.7))
        assert evaluate_elbo(probe, val, seed=cfg.seed).per_step == pytest.approx(value,
                                                                                 abs=1e-10)
        probe.load_state_dict(seen[step])              # the iterate itself scores otherwise
        assert abs(evaluate_elbo(probe, val, seed=cfg.seed).per_step - value) > 1e-6
    assert result.best_val == max(vals.values())
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    for key, value in _expected_average(seen[:result.best_step + 1], 0.7).items():
        torch.testing.assert_close(best["model"][key], value, rtol=0, atol=1e-12)
        torch.testing.assert_close(trainer.model.state_dict()[key], value, rtol=0, atol=1e-12)


def test_resume_keeps_the_parameter_average(tmp_path):
    data = make_data(30)
    train, val = ListDataset(data[:23]), ListDataset(data[23:])
    cfg = dict(average_decay=0.9, eval_every=5)
    full = Trainer(_model(), _config(max_steps=16, **cfg), tmp_path / "a")
    full.fit(train, val)
    Trainer(_model(), _config(max_steps=8, **cfg), tmp_path / "b").fit(train, val)
    resumed = Trainer(_model(seed=5), _config(max_steps=16, **cfg), tmp_path / "b")
    resumed.fit(train, val, resume=True)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for key, value in a["average"].items():
        assert torch.equal(value, b["average"][key]), key
    assert a["best_val"] == b["best_val"] and a["best_step"] == b["best_step"]
    # a last.pt whose average does not fit the model is refused by name
    broken = dict(b, average={"C": torch.zeros(1)})
    torch.save(broken, tmp_path / "b" / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="'average'"):
        Trainer(_model(), _config(max_steps=20, **cfg), tmp_path / "b").fit(train, val,
                                                                           resume=True)


# ------------------------------------------------------------ training windows
def _long(lengths, D=2, seed=0):
    """A SequenceDataset of sequences of the given lengths, times 0.5 apart."""
    from dynvae.data.dataset import Sequence, SequenceDataset
    rng = torch.Generator().manual_seed(seed)
    return SequenceDataset([Sequence(t=[0.5 * k for k in range(T)],
                                     x=torch.randn(T, D, generator=rng).double().numpy(),
                                     id=str(i)) for i, T in enumerate(lengths)],
                           [f"f{d}" for d in range(D)])


def test_training_windows_are_slices_of_their_sequences():
    from dynvae.train.batching import TrainingWindows
    data = _long([100, 30, 64, 65])
    windows = TrainingWindows(data, 32, seed=1, epoch=0)
    # ceil(L / 32) windows a sequence: 4, 1, 2, 3
    assert windows.owner.tolist() == [0] * 4 + [1] + [2] * 2 + [3] * 3
    assert windows.lengths.tolist() == [32] * 4 + [30] + [32] * 5
    starts = []
    for k in range(len(windows)):
        seq, cut = data.sequences[windows.owner[k]], windows.window_of(k)
        assert cut.id == seq.id and len(cut) == min(len(seq), 32)
        a = int(round(cut.t[0] / 0.5))
        assert (cut.x == seq.x[a:a + len(cut)]).all() and (cut.t == seq.t[a:a + len(cut)]).all()
        starts.append(a)
    assert starts[4] == 0                              # the 30-step sequence is one window
    assert len(set(starts[:4])) > 1                    # new starts for each window
    again = TrainingWindows(data, 32, seed=1, epoch=0)
    later = TrainingWindows(data, 32, seed=1, epoch=1)
    assert [again.window_of(k).t[0] for k in range(10)] == [0.5 * a for a in starts]
    assert [later.window_of(k).t[0] for k in range(10)] != [0.5 * a for a in starts]
    batch = windows.to_batch([0, 4, 9], dtype=torch.float64)
    assert batch.x.shape == (3, 32, 2) and batch.lengths.tolist() == [32, 30, 32]
    with pytest.raises(ConfigError, match="train_window"):
        TrainingWindows(data, 0, seed=0, epoch=0)
    with pytest.raises(ConfigError, match="SequenceDataset"):
        TrainingWindows(ListDataset(make_data(3)), 8, seed=0, epoch=0)
    with pytest.raises(ConfigError, match="train_window"):
        TrainConfig(train_window=-1)


def test_a_training_window_moves_to_the_nearest_observation():
    import numpy as np

    from dynvae.data.dataset import Sequence, SequenceDataset
    from dynvae.train.batching import TrainingWindows
    x = np.full((400, 1), np.nan)
    x[390] = 1.0                                        # one observed step, near the end
    data = SequenceDataset([Sequence(t=range(400), x=x, id="a")], ["v"])
    windows = TrainingWindows(data, 20, seed=0, epoch=0)
    assert len(windows) == 20
    for k in range(len(windows)):
        cut = windows.window_of(k)
        assert len(cut) == 20 and (~np.isnan(cut.x)).sum() == 1


@pytest.mark.parametrize("window", [0, 16])
def test_trainer_reads_windows_and_resumes_exactly(tmp_path, window):
    def model(seed=0):
        torch.manual_seed(seed)
        return RecordingDVAE(2, 2).double()

    train, val = _long([70, 10, 40]), _long([50], seed=1)
    cfg = dict(train_window=window, batch_size=3, max_epochs=3)
    first = model()
    Trainer(first, _config(**cfg), tmp_path / "a").fit(train, val)
    seen = first.seen
    # windows: ceil(70/16) + 1 + ceil(40/16) = 9 an epoch in batches of 3
    if window:
        assert len(seen) == 9 and all(T <= 16 for T, _ in seen)
        assert sorted(sum((w for _, w in seen[:3]), [])) == [10] + [16] * 8
    else:
        assert len(seen) == 3 and seen[0][0] == 70
    # interrupted mid-epoch and resumed: the same windows, the same parameters
    Trainer(model(), _config(max_steps=2, **cfg), tmp_path / "b").fit(train, val)
    Trainer.resume(tmp_path / "b", model(seed=5), train, val, config=_config(**cfg))
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == (9 if window else 3)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_a_non_finite_validation_bound_is_never_the_best(tmp_path, monkeypatch):
    import dynvae.train.trainer as trainer_module
    values = iter([math.nan, -5.0, -math.inf, -6.0, -4.0])

    class Summary:
        def __init__(self):
            self.per_step = next(values)
    monkeypatch.setattr(trainer_module, "evaluate_elbo", lambda *a, **k: Summary())
    data = ListDataset(make_data(10))
    result = Trainer(_model(), _config(max_steps=15, eval_every=3, batch_size=10),
                     tmp_path).fit(data, data)
    assert (result.best_step, result.best_val) == (15, -4.0)
    assert [r.get("val_elbo_per_step") for r in result.history if "val_elbo_per_step" in r
            ][:2] == pytest.approx([math.nan, -5.0], nan_ok=True)
