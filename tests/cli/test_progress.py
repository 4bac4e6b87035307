"""Progress and stop reports: the training bar's budget, evaluation in chunks, GP
evaluations with their likelihood, convergence notes."""

import math

import numpy as np
import pytest
import torch

from dynvae.commands.train import convergence_note, stop_note
from dynvae.data import from_numpy
from dynvae.train import evaluation
from dynvae.train.trainer import TrainResult, _BudgetBar


def test_budget_bar_counts_toward_the_budget_that_ends_first():
    bar = _BudgetBar(total_steps=1000, max_seconds=10.0, step=0, enabled=False)
    bar.advance(100, 5.0, loss=1.0)                     # 10% of the steps, 50% of the time
    assert bar.shown == pytest.approx(50.0)
    bar.advance(900, 6.0, loss=1.0)                     # steps now closer to their end
    assert bar.shown == pytest.approx(90.0)
    bar.advance(1000, 12.0, loss=1.0)
    assert bar.shown == pytest.approx(100.0)
    steps = _BudgetBar(total_steps=50, max_seconds=None, step=10, enabled=False)
    steps.advance(11, 1.0, loss=1.0)
    assert steps.shown == 11 and steps.bar.total == 50


def test_convergence_note_tells_tolerance_from_the_iteration_limit():
    class Fit:
        method, max_iter, tol = "em", 5, 1e-9
    assert "EM converged after 2 iterations" in convergence_note([{}, {}, {}], Fit)
    note = convergence_note([{}] * 6, Fit)
    assert "stopped at max_iter = 5" in note and "max_iter=N" in note


def test_stop_note_names_the_budget_and_the_best_step():
    result = TrainResult([{}] * 40, best_step=30, best_val=-1.5, stopped="max_seconds")
    note = stop_note(result)
    assert "after 40 steps" in note and "time budget" in note and "step 30" in note
    assert note.endswith("(the weights kept)")
    assert stop_note(result, 0.995).endswith("(the weights averaged with decay 0.995 kept)")


def _lgssm_and_data(n: int = 9):
    from dynvae.data import Standardizer
    from dynvae.models.lgssm import LGSSM, Config
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 15, size=n)
    x = np.full((n, 15, 2), np.nan)
    for i, T in enumerate(lengths):
        x[i, :T] = rng.normal(size=(T, 2)).cumsum(0)
    x[rng.random(x.shape) < 0.1] = np.nan
    data = from_numpy(x, lengths=lengths)
    std = Standardizer().fit(data)
    data = std.transform(data)
    model = LGSSM(Config(), data_dim=2)
    model.initialize_from_data(data.to_batch(dtype=torch.float64))
    return model.double(), data, std


def test_chunked_evaluation_equals_one_batch(monkeypatch):
    """Scoring sequences a few at a time (for memory and progress) gives the numbers of
    scoring them all at once: the models treat sequences independently."""
    model, data, std = _lgssm_and_data()
    settings = evaluation.EvalSettings(horizon=2)
    monkeypatch.setattr(evaluation, "CHUNK", 10_000)
    whole = evaluation.evaluate_model(model, data, std, settings)
    monkeypatch.setattr(evaluation, "CHUNK", 2)
    chunked = evaluation.evaluate_model(model, data, std, settings)
    assert set(whole) == set(chunked)
    for key in whole:
        assert chunked[key] == pytest.approx(whole[key], rel=1e-10, abs=1e-10), key


def test_gp_fit_reports_every_evaluation_and_whether_it_converged():
    from dynvae.gp.kernels import Matern32
    from dynvae.gp.regression import StateSpaceGP
    gen = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 10, 80, dtype=torch.float64)
    x = torch.sin(t) + 0.1 * torch.randn(80, generator=gen, dtype=torch.float64)
    seen = []
    fit = StateSpaceGP(Matern32()).fit(t, x, max_iter=50,
                                       callback=lambda i, lml: seen.append((i, lml)))
    assert [i for i, _ in seen] == list(range(1, fit.n_evaluations + 1))
    assert all(math.isfinite(v) for _, v in seen)
    assert max(v for _, v in seen) == pytest.approx(fit.log_marginal_likelihood, rel=1e-6)
    assert fit.converged is True
    short = StateSpaceGP(Matern32()).fit(t, x, max_iter=1)
    assert short.converged is False
