"""Independent oracle for linear-Gaussian instances of the deep DVAEs (STORN, RVAE, DSAE).

Every random quantity of a model run with identity activations is an affine function
``mean + M @ eps`` of one vector eps of independent standard normals. The model's
equations are replayed on such affine values (:class:`Affine`), so joint means and
covariances of (x, z) under p, and of z under q, come out as (mean, M M^T) of stacked
quantities, with no recursion of the model's own code. Densities, the exact marginal
log p(x) and the closed-form ELBO are then plain dense Gaussian algebra.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from dynvae.nn.mlp import FreeVariance


class Affine:
    """value = mean + M @ eps: mean (n,), M (n, N)."""

    def __init__(self, mean: Tensor, M: Tensor) -> None:
        self.mean, self.M = mean, M

    @classmethod
    def constant(cls, value: Tensor, N: int) -> Affine:
        return cls(value, value.new_zeros(value.shape[0], N))

    def linear(self, W: Tensor, b: Tensor | None = None) -> Affine:
        """W @ value + b."""
        mean = W @ self.mean
        return Affine(mean if b is None else mean + b, W @ self.M)

    def __add__(self, other: Affine) -> Affine:
        return Affine(self.mean + other.mean, self.M + other.M)

    def rows(self, keep: Tensor) -> Affine:
        """The entries where ``keep`` (n,) is True; the others become the constant 0."""
        keep = keep.to(self.mean.dtype)
        return Affine(self.mean * keep, self.M * keep[:, None])

    def select(self, keep: Tensor) -> Affine:
        """Only the entries where ``keep`` (n,) is True (a shorter vector)."""
        return Affine(self.mean[keep], self.M[keep])

    @staticmethod
    def cat(parts: list[Affine]) -> Affine:
        return Affine(torch.cat([p.mean for p in parts]), torch.cat([p.M for p in parts]))

    def moments(self) -> tuple[Tensor, Tensor]:
        return self.mean, self.M @ self.M.T


class NoiseBank:
    """Hands out fresh coordinates of eps (N,): ``draw(std)`` is N(0, diag std^2)."""

    def __init__(self, N: int, dtype=torch.float64) -> None:
        self.N, self.used, self.dtype = N, 0, dtype

    def draw(self, std: Tensor) -> Affine:
        n = std.shape[0]
        M = torch.zeros(n, self.N, dtype=self.dtype)
        M[:, self.used:self.used + n] = torch.diag(std)
        self.used += n
        assert self.used <= self.N, "the noise bank is too small"
        return Affine(torch.zeros(n, dtype=self.dtype), M)

    def gaussian(self, mean: Affine, var: Tensor) -> Affine:
        """mean + N(0, diag var), var (n,) a constant."""
        return mean + self.draw(var.sqrt())


class LinearRNN(nn.Module):
    """h_t = W_in x_t + W_h h_{t-1} + b: nn.GRU's batch-first call with identity
    activations, to swap into a model; ``step`` replays it on :class:`Affine` values."""

    def __init__(self, input_size: int, hidden_size: int, generator: torch.Generator,
                 dtype=torch.float64) -> None:
        super().__init__()
        rnd = lambda *s: torch.randn(*s, generator=generator, dtype=dtype)
        self.W_in = nn.Parameter(rnd(hidden_size, input_size) / math.sqrt(input_size))
        self.W_h = nn.Parameter(0.5 * rnd(hidden_size, hidden_size) / math.sqrt(hidden_size))
        self.b = nn.Parameter(0.3 * rnd(hidden_size))

    def forward(self, inputs: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = inputs.new_zeros(inputs.shape[0], self.b.shape[0]) if hx is None else hx[0]
        out = []
        for t in range(inputs.shape[1]):
            h = inputs[:, t] @ self.W_in.T + h @ self.W_h.T + self.b
            out.append(h)
        return torch.stack(out, 1), h[None]

    def step(self, x: Affine, h: Affine) -> Affine:
        return x.linear(self.W_in) + h.linear(self.W_h, self.b)

    def run(self, xs: list[Affine], N: int, reverse: bool = False) -> list[Affine]:
        """States over a list of inputs (forward, or backward from the last one)."""
        order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
        h = Affine.constant(self.b.new_zeros(self.b.shape[0]), N)
        out: list[Affine | None] = [None] * len(xs)
        for t in order:
            h = self.step(xs[t], h)
            out[t] = h
        return out


def mvn_log_prob(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x | mean, cov), (…, D) points and (…, D, D) covariances -> (…), by
    torch.distributions (independent of dynvae's Gaussian code)."""
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


def head_mean(head, h: Affine) -> Affine:
    """Mean of a GaussianHead (affine) applied to an affine input."""
    return h.linear(head.mean.weight, head.mean.bias)


def head_constant_var(head, h: Tensor | None = None) -> Tensor:
    """Variance of a GaussianHead whose variance is constant: a free variance, a head
    whose variance weights are zero, or a head applied to a constant input h."""
    if h is None:
        raw = head.variance.raw if isinstance(head.variance, FreeVariance) else \
            head.variance.bias
    else:
        raw = head.variance(h)
    return softplus(raw) + head.min_var


def log_density(y: Affine, values: Tensor) -> Tensor:
    """log N(values; mean, M M^T) of the joint Gaussian of ``y``: values (K, n) -> (K,)."""
    mean, cov = y.moments()
    return mvn_log_prob(values, mean, cov)


def expected_log_density(y: Affine, value_mean: Tensor, value_cov: Tensor) -> Tensor:
    """E log N(Y; mean, M M^T) for Y ~ N(value_mean, value_cov) (closed form)."""
    mean, cov = y.moments()
    return mvn_log_prob(value_mean, mean, cov) - 0.5 * torch.trace(
        torch.linalg.solve(cov, value_cov))


def gaussian_entropy(cov: Tensor) -> Tensor:
    n = cov.shape[0]
    return 0.5 * (n * math.log(2 * math.pi * math.e) + torch.logdet(cov))


def swap_grus(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Replace every nn.GRU of ``model`` by a :class:`LinearRNN` of the same sizes."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.GRU):
                setattr(module, child_name, LinearRNN(child.input_size, child.hidden_size,
                                                      generator))
    return model.double()
