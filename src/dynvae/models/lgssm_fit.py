"""Fitting the LGSSM: EM, gradient ascent, optimisers and the choice between them.

Every fit works on one batch holding all training sequences. Optimisers are strategy
objects: ``LBFGS()`` and ``Adam(lr=...)`` build a torch optimiser and are stepped with a
closure, so :func:`fit_gradient` treats them alike. Gradients come by default from
Fisher's identity (dynvae.models.lgssm_objective): one Kalman smoother pass without
autograd (the native C back end where it compiles) gives the value and the EM
statistics, and the gradient of the Q-function at the current parameters is the exact
gradient of the log-likelihood. ``gradient="autograd"`` differentiates through the
Kalman filter instead (the parallel scan). ``FIT_METHODS`` maps the ``method`` of
:class:`FitConfig` to a function.
"""

from __future__ import annotations

import abc
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dynvae.data.batch import SequenceBatch
from dynvae.errors import ConfigError, DataError
from dynvae.models.lgssm_em import EMStatistics, e_step
from dynvae.progress import shown
from dynvae.ssm import kalman_filter
from dynvae.ssm.model import _EVENT_DIMS, LinearGaussianSSM


class Optimizer(abc.ABC):
    """Builds a torch optimiser for a model's parameters."""

    @abc.abstractmethod
    def build(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A torch optimiser over ``params``, stepped with a closure."""


@dataclass(frozen=True)
class LBFGS(Optimizer):
    """Full-batch L-BFGS with a strong-Wolfe line search; ``max_iter`` iterations per step."""

    lr: float = 1.0
    max_iter: int = 20
    history_size: int = 50
    tolerance_change: float = 1e-14

    def build(self, params):
        return torch.optim.LBFGS(list(params), lr=self.lr, max_iter=self.max_iter,
                                 history_size=self.history_size, line_search_fn="strong_wolfe",
                                 tolerance_grad=1e-10, tolerance_change=self.tolerance_change)


@dataclass(frozen=True)
class Adam(Optimizer):
    lr: float = 0.05

    def build(self, params):
        return torch.optim.Adam(list(params), lr=self.lr)


@dataclass
class FitConfig:
    """How ``dynvae train`` fits an LGSSM.

    method: "lbfgs" (the default: L-BFGS on the exact log-likelihood), "em"
        (expectation-maximisation) or "adam".
    gradient: "fisher" (the default: Fisher's identity on one smoother pass without
        autograd) or "autograd" (back-propagation through the Kalman filter).
    max_iter: EM iterations, or optimiser steps (each L-BFGS step runs up to 20
        inner iterations).
    tol: stop when the log-likelihood per observed entry changes by less than tol.
    lr: learning rate of Adam (L-BFGS uses a line search).
    init_from_data: set noise scales (and a PCA emission) from the data first.
    max_seconds: wall-clock budget of the fit (None: none). EM stops after the first
        E-step past it; L-BFGS and Adam stop at the first objective evaluation past it
        and keep the parameters of the last completed step. The last history row then
        has ``time_budget_reached`` = 1.
    """

    method: str = "lbfgs"
    gradient: str = "fisher"
    max_iter: int = 100
    tol: float = 1e-9
    lr: float = 0.05
    init_from_data: bool = True
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_seconds is not None and not (
                isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise ConfigError(f"max_seconds must be a positive number of seconds or None, "
                              f"got {self.max_seconds!r}")


GRADIENTS = ("fisher", "autograd")


def _check_count(name: str, value) -> None:
    """An iteration count: a positive integer, or one ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class _FitBar(tqdm):
    """tqdm's bar, drawn on a terminal only (``dynvae.progress.shown``). Where it is not
    drawn (standard error redirected to a log) but progress was asked for, its status
    goes out as one plain line every ``LINE_SECONDS`` and at the end, so a log shows how
    a long fit goes without a line of carriage returns."""

    LINE_SECONDS = 10.0

    def __init__(self, *args, desc: str = "", lines: bool = False, **kwargs) -> None:
        super().__init__(*args, desc=desc, **kwargs)
        self._name = desc                  # a hidden bar keeps no desc
        self._lines, self._status, self._steps = lines and self.disable, "", 0
        self._last_line = time.monotonic()

    def __iter__(self):
        for item in super().__iter__():    # a hidden bar does not count its steps
            self._steps += 1
            yield item

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=refresh)
        self._status = s
        if self._lines and time.monotonic() - self._last_line >= self.LINE_SECONDS:
            self._line()

    def _line(self) -> None:
        print(f"{self._name}: step {self._steps}, {self._status}", file=sys.stderr, flush=True)
        self._last_line = time.monotonic()

    def close(self) -> None:
        if self._lines and self._status:
            self._line()
            self._lines = False
        super().close()


def progress_range(n: int, progress: bool, desc: str):
    """Steps 0..n-1 with a progress line that shows the log-likelihood per entry and its
    last change (see :func:`show`), but no ETA: n is a cap, and fits stop far earlier."""
    return _FitBar((i for i in range(n)), disable=shown(progress), desc=desc, leave=False,
                   unit="step", lines=progress)


class Budget:
    """A fit's wall-clock budget: ``spent()`` once ``seconds`` (None: never) have passed
    since it was made."""

    def __init__(self, seconds: float | None) -> None:
        self.start = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def spent(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds


class _OutOfTime(Exception):
    """Raised inside an optimiser's closure once the fit's budget is spent."""


def show(bar, score: float, previous: float | None, n_obs: float, tol: float) -> None:
    change = "-" if previous is None else f"{abs(score - previous) / n_obs:.1e}"
    bar.set_postfix_str(f"log-lik/entry {score / n_obs:.6f}, change {change} "
                        f"(stops below {tol:.0e})", refresh=False)


def e_step_of(model, batch: SequenceBatch) -> EMStatistics:
    """One E-step of ``model`` on ``batch`` under no_grad (statistics per step group)."""
    with torch.no_grad():
        x, mask, u = model._inputs(batch)
        groups = model.step_groups(batch)
        return e_step(model.ssm(batch), x, mask, batch.lengths.to(x.device), u,
                      model.inference.smoother, groups.index, groups.count)


def check_fittable(model, batch: SequenceBatch) -> float:
    """The number of scored entries of ``batch``; DataError when there is nothing to fit:
    no sequence with two steps (no transition to learn from) or no scored entry (e.g. a
    single observed step, left out of a diffuse start's likelihood)."""
    if int(batch.lengths.max()) < 2:
        raise DataError(f"fitting an LGSSM needs a sequence with at least 2 steps; the "
                        f"longest of the {batch.batch_size} given has "
                        f"{int(batch.lengths.max())}")
    n_obs = float(model.scored_mask(batch).sum())
    if n_obs == 0:
        raise DataError("fitting an LGSSM needs observed entries after the diffuse start's "
                        "burn-in steps; the data has none")
    return n_obs


def _row(step: int, score: float, n_obs: float, budget: Budget) -> dict:
    return {"step": step, "log_likelihood": score, "log_likelihood_per_entry": score / n_obs,
            "seconds": budget.elapsed()}


def _out_of_time(history: list[dict]) -> list[dict]:
    history[-1]["time_budget_reached"] = 1.0
    return history


def fit_em(model, batch: SequenceBatch, n_iter: int = 100, tol: float = 1e-9,
           progress: bool = False, max_seconds: float | None = None) -> list[dict]:
    """Expectation-maximisation over all sequences of ``batch``; missing entries by
    their conditional moments (see dynvae.models.lgssm_em). Stops when the full
    log-likelihood per observed entry changes by less than ``tol``, or after the first
    E-step that ends past ``max_seconds`` (the parameters it scored are kept).

    Returns one row per parameter set visited (row 0: the starting point): step,
    log_likelihood (the score of ``model.log_likelihood``, summed over sequences),
    log_likelihood_per_entry, seconds since the start (and time_budget_reached = 1 on
    the last row when the budget ended the fit).
    """
    _check_count("n_iter", n_iter)
    budget = Budget(max_seconds)
    n_obs = check_fittable(model, batch)
    x, mask, u = model._inputs(batch)
    groups = model.step_groups(batch)
    history, previous = [], None
    bar = progress_range(n_iter, progress, "EM")
    for step in bar:
        stats = e_step_of(model, batch)
        with torch.no_grad():
            score = float(model._score(model.ssm(batch), x, mask, u, stats.filtered).sum())
        _check_finite(score, "EM")
        show(bar, score, history[-1]["log_likelihood"] if history else None, n_obs, tol)
        history.append(_row(step, score, n_obs, budget))
        full = float(stats.log_likelihood.sum()) / float(mask.sum())
        if previous is not None and abs(full - previous) < tol:
            break
        if budget.spent():
            return _out_of_time(history)
        previous = full
        model.m_step(stats, groups)
    else:
        with torch.no_grad():
            score = float(model.log_likelihood(batch).sum())
        history.append(_row(n_iter, score, n_obs, budget))
    return history


def _check_finite(score: float, where: str) -> None:
    if not math.isfinite(score):
        raise DataError(f"the log-likelihood became non-finite during {where} fitting; "
                        "try method='em' or a smaller learning rate")


def _time_prefix(model: LinearGaussianSSM, T: int, n: int) -> LinearGaussianSSM:
    """The first n steps of a model whose time-varying fields carry T steps."""
    cut = {}
    for name in model.time_varying:
        value = getattr(model, name)
        axis = value.ndim - _EVENT_DIMS[name] - 1
        cut[name] = value.narrow(axis, 0, n)
    return model if not cut else LinearGaussianSSM(**{
        **{f: getattr(model, f) for f in _EVENT_DIMS}, **cut,
        "time_varying": model.time_varying})


def burn_term(model, batch: SequenceBatch) -> Tensor:
    """() differentiable log-density of the burn-in steps, through a sequential filter
    over the shortest prefix that holds them (usually one step)."""
    x, mask, u = model._inputs(batch)
    if model.initial.burn == 0:
        return x.new_zeros(())
    burn = model._burn_steps(mask)
    if not bool(burn.any()):
        return x.new_zeros(())
    n = int(torch.nonzero(burn.any(0)).max()) + 1
    ssm = _time_prefix(model.ssm(batch), x.shape[-2], n)
    cut = lambda v: None if v is None else v[:, :n]
    f = kalman_filter(ssm, x[:, :n], mask[:, :n], cut(u))
    return model.burn_log_likelihood(ssm, x[:, :n], mask[:, :n], cut(u), f).sum()


def fisher_objective(model, batch: SequenceBatch) -> Tensor:
    """() the log-likelihood of ``batch`` (summed over sequences) with the exact
    gradient by Fisher's identity: value from one smoother pass without autograd, and
    ``q - q.detach()`` for the gradient, q the Q-function at the current parameters
    (its gradient there is that of log p(x)), less the burn-in steps' own term."""
    stats = e_step_of(model, batch)
    x, mask, u = model._inputs(batch)
    with torch.no_grad():
        score = model._score(model.ssm(batch), x, mask, u, stats.filtered).sum()
    q = model.expected_log_likelihood(stats, model.step_groups(batch))
    burn = burn_term(model, batch)
    return score + (q - q.detach()) - (burn - burn.detach())


def _objective(model, batch: SequenceBatch, gradient: str) -> Tensor:
    if gradient == "fisher":
        return fisher_objective(model, batch)
    return model.log_likelihood(batch).sum()


def fit_gradient(model, batch: SequenceBatch, optimizer: Optimizer, steps: int = 50,
                 tol: float = 1e-9, progress: bool = False, gradient: str = "fisher",
                 max_seconds: float | None = None) -> list[dict]:
    """Maximise ``model.log_likelihood`` per scored entry with ``optimizer`` (``LBFGS()``
    or ``Adam(lr)``); ``gradient``: "fisher" or "autograd" (module docstring). The first
    objective evaluation that starts past ``max_seconds`` ends the fit with the
    parameters of the last completed step.

    Returns one row per parameter set visited (row 0: the starting point, as in
    :func:`fit_em`): step, log_likelihood, log_likelihood_per_entry, seconds.
    """
    _check_count("steps", steps)
    if gradient not in GRADIENTS:
        raise ConfigError(f"unknown gradient {gradient!r}; choose one of {list(GRADIENTS)}")
    budget = Budget(max_seconds)
    n_obs = check_fittable(model, batch)
    opt = optimizer.build(model.parameters())
    with torch.no_grad():
        start = float(model.log_likelihood(batch).sum())
    bar = progress_range(steps, progress, "fit")
    evaluations = 0

    def closure():
        nonlocal evaluations
        if budget.spent():
            raise _OutOfTime
        opt.zero_grad()
        loss = -_objective(model, batch, gradient) / n_obs
        loss.backward()
        evaluations += 1           # an L-BFGS step evaluates up to 20 times: show each
        bar.set_postfix_str(f"log-lik/entry {-float(loss.detach()):.6f}, {evaluations} evaluations",
                            refresh=True)
        return loss

    history = [_row(0, start, n_obs, budget)]
    previous = start if math.isfinite(start) else None
    for step in bar:
        # what a step cut short by the budget restores (only a budget can cut one short)
        kept = None if max_seconds is None else {
            k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            opt.step(closure)
            with torch.no_grad():
                score = float(model.log_likelihood(batch).sum())
        except _OutOfTime:
            model.load_state_dict(kept)
            _out_of_time(history)
            break
        except torch.linalg.LinAlgError:    # a line search into degenerate covariances
            raise DataError("a covariance stopped being positive definite during fitting "
                            "(too few or degenerate observations?); try method='em'"
                            ) from None
        history.append(_row(step + 1, score, n_obs, budget))
        _check_finite(score, "gradient")
        show(bar, score, previous, n_obs, tol)
        if previous is not None and abs(score - previous) / n_obs < tol:
            break
        previous = score
    model.refresh_initial(batch)
    return history


def _fit_em(model, batch, config: FitConfig, progress: bool) -> list[dict]:
    return model.fit_em(batch, n_iter=config.max_iter, tol=config.tol, progress=progress,
                        max_seconds=config.max_seconds)


def _fit_lbfgs(model, batch, config: FitConfig, progress: bool) -> list[dict]:
    # the inner iterations stop, like the outer steps, once the loss per entry moves
    # by less than tol
    return model.fit_gradient(batch, optimizer=LBFGS(tolerance_change=config.tol),
                              steps=config.max_iter, tol=config.tol, progress=progress,
                              gradient=config.gradient, max_seconds=config.max_seconds)


def _fit_adam(model, batch, config: FitConfig, progress: bool) -> list[dict]:
    return model.fit_gradient(batch, optimizer=Adam(config.lr), steps=config.max_iter,
                              tol=config.tol, progress=progress, gradient=config.gradient,
                              max_seconds=config.max_seconds)


FIT_METHODS: dict[str, Callable] = {"em": _fit_em, "lbfgs": _fit_lbfgs, "adam": _fit_adam}


def fit_method(name: str) -> Callable:
    if name not in FIT_METHODS:
        raise ConfigError(f"unknown LGSSM fit method {name!r}; choose one of {sorted(FIT_METHODS)}")
    return FIT_METHODS[name]
