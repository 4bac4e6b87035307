"""Constrained parameter blocks of the LGSSM: matrices, covariances, initial states.

Each block is a small strategy object that says whether it is learned and can be
assigned in closed form (the EM M-step) as well as trained by gradients.
Covariances are symmetric positive definite by construction: a Cholesky factor
with an exponentiated diagonal (log-Cholesky), or a diagonal of exponentiated
log-variances.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dynvae.errors import ConfigError
from dynvae.gaussian import symmetrize

MIN_VARIANCE = 1e-10  # floor on variances assigned by EM, so the log-Cholesky stays finite


class MatrixBlock(nn.Module, abc.ABC):
    """A (rows, cols) matrix that is either learned or fixed."""

    learned: ClassVar[bool]

    @abc.abstractmethod
    def forward(self) -> Tensor:
        """The current value."""

    @abc.abstractmethod
    def assign(self, value: Tensor) -> None:
        """Set the value in closed form (the EM M-step)."""


class LearnedMatrix(MatrixBlock):
    learned = True

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.value = nn.Parameter(init.clone())

    def forward(self) -> Tensor:
        return self.value

    @torch.no_grad()
    def assign(self, value: Tensor) -> None:
        self.value.copy_(value)


class FixedMatrix(MatrixBlock):
    learned = False

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value.clone())

    def forward(self) -> Tensor:
        return self.value

    def assign(self, value: Tensor) -> None:
        raise ConfigError("a fixed matrix cannot be assigned")


class Covariance(nn.Module, abc.ABC):
    """A (n, n) symmetric positive definite matrix."""

    diagonal: ClassVar[bool]

    @abc.abstractmethod
    def forward(self) -> Tensor:
        """The current value."""

    @abc.abstractmethod
    def cholesky(self) -> Tensor:
        """The lower-triangular factor L of the value L L^T, from the parametrisation."""

    @abc.abstractmethod
    def assign(self, cov: Tensor) -> None:
        """Set the covariance in closed form (the EM M-step), projected onto the
        parametrisation (variances floored at MIN_VARIANCE)."""


class CholeskyCovariance(Covariance):
    """Full covariance L L^T, L lower triangular with diagonal exp(raw_diag)."""

    diagonal = False

    def __init__(self, n: int, variance: float = 1.0, dtype=torch.float64) -> None:
        super().__init__()
        self.raw_lower = nn.Parameter(torch.zeros(n, n, dtype=dtype))
        self.raw_diag = nn.Parameter(torch.full((n,), 0.5 * math.log(variance), dtype=dtype))

    def cholesky(self) -> Tensor:
        return torch.tril(self.raw_lower, -1) + torch.diag_embed(self.raw_diag.exp())

    def forward(self) -> Tensor:
        L = self.cholesky()
        return L @ L.T

    @torch.no_grad()
    def assign(self, cov: Tensor) -> None:
        cov = symmetrize(cov)
        eigval, eigvec = torch.linalg.eigh(cov)
        cov = (eigvec * eigval.clamp_min(MIN_VARIANCE)) @ eigvec.T
        L = torch.linalg.cholesky(symmetrize(cov))
        self.raw_lower.copy_(torch.tril(L, -1))
        self.raw_diag.copy_(torch.diagonal(L).log())


class DiagonalCovariance(Covariance):
    """Diagonal covariance diag(exp(raw_log_var))."""

    diagonal = True

    def __init__(self, n: int, variance: float = 1.0, dtype=torch.float64) -> None:
        super().__init__()
        self.raw_log_var = nn.Parameter(torch.full((n,), math.log(variance), dtype=dtype))

    def forward(self) -> Tensor:
        return torch.diag_embed(self.raw_log_var.exp())

    def cholesky(self) -> Tensor:
        return torch.diag_embed((0.5 * self.raw_log_var).exp())

    @torch.no_grad()
    def assign(self, cov: Tensor) -> None:
        self.raw_log_var.copy_(torch.diagonal(cov).clamp_min(MIN_VARIANCE).log())


COVARIANCES: dict[bool, type[Covariance]] = {False: CholeskyCovariance, True: DiagonalCovariance}


class InitialState(nn.Module, abc.ABC):
    """Distribution of z_0 used by the filter, and the part of the likelihood it scores."""

    learned: ClassVar[bool]
    burn: int

    @abc.abstractmethod
    def prior(self) -> tuple[Tensor, Tensor]:
        """(S,) mean and (S, S) covariance of z_0 used for filtering."""

    @abc.abstractmethod
    def sampling_moments(self) -> tuple[Tensor, Tensor]:
        """(S,) mean and (S, S) covariance of z_0 used to draw new sequences."""

    @abc.abstractmethod
    def assign(self, mean: Tensor, cov: Tensor) -> None:
        """Store the EM estimate of z_0's distribution (average smoothed moments)."""


class LearnedInitial(InitialState):
    """z_0 ~ N(m0, P0) with learned m0 and P0; every observed entry is scored."""

    learned = True
    burn = 0

    def __init__(self, S: int, diagonal: bool, dtype=torch.float64) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(S, dtype=dtype))
        self.cov = COVARIANCES[diagonal](S, 1.0, dtype)

    def prior(self) -> tuple[Tensor, Tensor]:
        return self.mean, self.cov()

    def prior_factor(self) -> tuple[Tensor, Tensor]:
        """(S,) mean and (S, S) lower Cholesky factor of the covariance."""
        return self.mean, self.cov.cholesky()

    def sampling_moments(self) -> tuple[Tensor, Tensor]:
        return self.prior()

    @torch.no_grad()
    def assign(self, mean: Tensor, cov: Tensor) -> None:
        self.mean.copy_(mean)
        self.cov.assign(cov)


class DiffuseInitial(InitialState):
    """Approximate diffuse initial state z_0 ~ N(0, kappa I), as statsmodels' default.

    The log-likelihood leaves out the first ``burn`` observed steps of each sequence
    (statsmodels' ``loglikelihood_burn``), so it is log p(x_rest | x_first), which
    stays finite as kappa grows (Durbin & Koopman 2012, sec. 5.1 and 7.2).
    Drawing new sequences needs a proper distribution for z_0: fitting stores the
    average smoothed moments of z_0 over the training sequences for that purpose.
    """

    learned = False

    def __init__(self, S: int, kappa: float, burn: int, dtype=torch.float64) -> None:
        super().__init__()
        if kappa <= 0:
            raise ConfigError(f"diffuse_kappa must be positive, got {kappa}")
        if burn < 1:
            raise ConfigError(f"diffuse_burn must be at least 1, got {burn}")
        self.kappa = float(kappa)
        self.burn = int(burn)
        self.register_buffer("sample_mean", torch.full((S,), float("nan"), dtype=dtype))
        self.register_buffer("sample_cov", torch.full((S, S), float("nan"), dtype=dtype))

    def prior(self) -> tuple[Tensor, Tensor]:
        S = self.sample_mean.shape[0]
        like = self.sample_mean
        return torch.zeros_like(like), self.kappa * torch.eye(S, dtype=like.dtype,
                                                              device=like.device)

    def sampling_moments(self) -> tuple[Tensor, Tensor]:
        if torch.isnan(self.sample_mean).any():
            raise ConfigError("a diffuse initial state has no proper distribution to sample "
                              "from until the model is fitted (fit_em, fit_gradient or fit)")
        return self.sample_mean, self.sample_cov

    @torch.no_grad()
    def assign(self, mean: Tensor, cov: Tensor) -> None:
        self.sample_mean.copy_(mean)
        self.sample_cov.copy_(symmetrize(cov))
