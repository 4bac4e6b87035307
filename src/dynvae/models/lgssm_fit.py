"""Fitting strategies for the LGSSM: gradient optimisers and the EM/gradient choice.

Optimisers are strategy objects: ``LBFGS()`` and ``Adam(lr=...)`` build a torch
optimiser and are stepped with a closure, so ``LGSSM.fit_gradient`` treats them
alike. ``FIT_METHODS`` maps the ``method`` of :class:`FitConfig` to a function.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from dynvae.errors import ConfigError


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

    def build(self, params):
        return torch.optim.LBFGS(list(params), lr=self.lr, max_iter=self.max_iter,
                                 history_size=self.history_size, line_search_fn="strong_wolfe",
                                 tolerance_grad=1e-10, tolerance_change=1e-14)


@dataclass(frozen=True)
class Adam(Optimizer):
    lr: float = 0.05

    def build(self, params):
        return torch.optim.Adam(list(params), lr=self.lr)


@dataclass
class FitConfig:
    """How ``dynvae train`` fits an LGSSM.

    method: "em" (expectation-maximisation), "lbfgs" or "adam" (gradient ascent on
        the exact log-likelihood).
    max_iter: EM iterations, or optimiser steps (each L-BFGS step runs up to 20
        inner iterations).
    tol: stop when the log-likelihood per observed entry changes by less than tol.
    lr: learning rate of Adam (L-BFGS uses a line search).
    init_from_data: set noise scales (and a PCA emission) from the data first.
    """

    method: str = "lbfgs"
    max_iter: int = 100
    tol: float = 1e-9
    lr: float = 0.05
    init_from_data: bool = True


def _fit_em(model, batch, config: FitConfig, progress: bool) -> list[dict]:
    return model.fit_em(batch, n_iter=config.max_iter, tol=config.tol, progress=progress)


def _fit_lbfgs(model, batch, config: FitConfig, progress: bool) -> list[dict]:
    return model.fit_gradient(batch, optimizer=LBFGS(), steps=config.max_iter, tol=config.tol,
                              progress=progress)


def _fit_adam(model, batch, config: FitConfig, progress: bool) -> list[dict]:
    return model.fit_gradient(batch, optimizer=Adam(config.lr), steps=config.max_iter,
                              tol=config.tol, progress=progress)


FIT_METHODS: dict[str, Callable] = {"em": _fit_em, "lbfgs": _fit_lbfgs, "adam": _fit_adam}


def fit_method(name: str) -> Callable:
    if name not in FIT_METHODS:
        raise ConfigError(f"unknown LGSSM fit method {name!r}; choose one of {sorted(FIT_METHODS)}")
    return FIT_METHODS[name]
