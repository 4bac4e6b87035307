"""The LGSSM fit's wall-clock budget (FitConfig.max_seconds): where each method stops,
which parameters it keeps, and what the CLI reports. The clock is a counter that the
objective advances, so the stops are exact and do not depend on the machine."""

import pytest
import torch

from dynvae.commands.train import convergence_note
from dynvae.errors import ConfigError
from dynvae.models import lgssm_fit
from dynvae.models.lgssm import LGSSM, Config
from tests.models.test_lgssm_fit import boundary_batch


class Clock:
    """Seconds = objective evaluations (E-steps or optimiser closures) so far."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(lgssm_fit, "time", c)
    e_step_of, objective = lgssm_fit.e_step_of, lgssm_fit._objective

    def counted_e_step(*args):
        c.now += 1.0
        return e_step_of(*args)

    def counted_objective(*args):
        c.now += 1.0
        return objective(*args)
    monkeypatch.setattr(lgssm_fit, "e_step_of", counted_e_step)
    monkeypatch.setattr(lgssm_fit, "_objective", counted_objective)
    return c


def _model(batch):
    model = LGSSM(Config(), data_dim=batch.x.shape[-1]).double()
    model.initialize_from_data(batch)
    return model


def _score(model, batch) -> float:
    with torch.no_grad():
        return float(model.log_likelihood(batch).sum())


def test_em_stops_after_the_e_step_past_the_budget_and_keeps_what_it_scored(clock):
    batch = boundary_batch(3)
    model = _model(batch)
    config = lgssm_fit.FitConfig(method="em", max_iter=50, max_seconds=3.5)
    history = model.fit(batch, None, config)
    assert len(history) == 4 and history[-1]["time_budget_reached"] == 1.0
    assert [row["seconds"] for row in history] == [1.0, 2.0, 3.0, 4.0]
    assert not any("time_budget_reached" in row for row in history[:-1])
    # the last row scored the parameters the model holds (no M-step after it)
    assert _score(model, batch) == pytest.approx(history[-1]["log_likelihood"], rel=1e-12)
    unlimited = _model(batch).fit(batch, None, lgssm_fit.FitConfig(method="em", max_iter=3))
    assert [r["log_likelihood"] for r in unlimited[:3]] == pytest.approx(
        [r["log_likelihood"] for r in history[:3]], rel=1e-12)


@pytest.mark.parametrize("method,seconds", [("lbfgs", 40.5), ("adam", 7.5)])
def test_gradient_fits_keep_the_last_completed_step_when_the_budget_ends(clock, method,
                                                                          seconds):
    batch = boundary_batch(3)
    model = _model(batch)
    config = lgssm_fit.FitConfig(method=method, max_iter=200, max_seconds=seconds)
    history = model.fit(batch, None, config)
    assert history[-1]["time_budget_reached"] == 1.0
    assert 2 <= len(history) < 201
    # an L-BFGS step stopped inside its line search is undone: the model holds the
    # parameters of the last completed step, whose score is the last row
    assert _score(model, batch) == pytest.approx(history[-1]["log_likelihood"], rel=1e-12)
    assert history[-1]["log_likelihood"] > history[0]["log_likelihood"]
    # a step ends after at most one evaluation started within the budget (a Fisher
    # evaluation advances the clock by 2: the objective and its E-step)
    assert history[-1]["seconds"] <= seconds + 2


def test_no_budget_runs_to_the_tolerance(clock):
    batch = boundary_batch(3)
    history = _model(batch).fit(batch, None, lgssm_fit.FitConfig(method="em", max_iter=4))
    assert len(history) == 5 and not any("time_budget_reached" in r for r in history)


@pytest.mark.parametrize("bad", [0, -1.0, "10"])
def test_budget_must_be_a_positive_number(bad):
    with pytest.raises(ConfigError, match="max_seconds"):
        lgssm_fit.FitConfig(max_seconds=bad)


def test_convergence_note_names_the_budget():
    config = lgssm_fit.FitConfig(method="lbfgs", max_iter=100, max_seconds=30)
    note = convergence_note([{}, {}, {"time_budget_reached": 1.0}], config)
    assert "L-BFGS stopped at max_seconds = 30 s after 2 iterations" in note
    assert "last completed iteration are kept" in note
    start = convergence_note([{"time_budget_reached": 1.0}], config)
    assert "after 0 iterations" in start and "starting parameters are kept" in start


def test_command_line_fit_stops_at_the_budget_and_says_so(tmp_path, capsys):
    """Any fit takes longer than 1e-9 s: L-BFGS stops before its first evaluation."""
    import csv

    from dynvae.cli import main
    from dynvae.plots.training import curve_columns
    run = tmp_path / "run"
    assert main(["train", "--model", "lgssm", "--dataset", "synthetic-lgssm",
                 "--set", "max_seconds=1e-9", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "L-BFGS stopped at max_seconds = 1e-09 s after 0 iterations" in out
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and rows[0]["time_budget_reached"] == "1.0"
    assert float(rows[0]["seconds"]) > 0
    shown, _ = curve_columns([{k: float(v) for k, v in r.items() if v} for r in rows])
    assert "time_budget_reached" not in shown and "seconds" not in shown
    assert (run / "plots" / "training_curve.png").is_file()
