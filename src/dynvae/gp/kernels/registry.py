"""Kernel names for the command line and config files, and a parser for sums of products.

``parse_kernel("matern52+quasiperiodic", init)`` builds Matern52() + QuasiPeriodic(); ``*``
binds tighter than ``+``. A factor may carry its own hyperparameters in parentheses:
positional is the length-scale of a Matern and the period of a (quasi-)periodic kernel,
e.g. ``"matern52(30) + periodic(24) + periodic(168)"``; keywords name the kernel's
hyperparameters (``KEYWORDS``: ``lengthscale`` and ``variance``; for (quasi-)periodic
kernels also ``period``, ``order`` (series order) and ``decay`` (the quasi-periodic
envelope's length-scale), their ``lengthscale`` being that of one cycle's shape), e.g.
``"periodic(7, lengthscale=0.5)"``. What a factor leaves out comes from
:class:`KernelInit`. A new kernel is one new entry in ``KERNELS``, ``POSITIONAL`` and
``KEYWORDS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import reduce

from dynvae.errors import ConfigError
from dynvae.gp.kernels.base import Kernel
from dynvae.gp.kernels.matern import Matern12, Matern32, Matern52
from dynvae.gp.kernels.periodic import Periodic
from dynvae.gp.kernels.quasiperiodic import QuasiPeriodic


@dataclass(frozen=True)
class KernelInit:
    """Initial hyperparameters given to every kernel a spec names, unless the spec sets them.

    ``periods``: the periodic parts that set no period of their own take these in the order
    they appear in the spec (then ``period`` once the list runs out), so that a daily and a
    weekly cycle can be asked for as ``periodic+periodic`` with ``periods=(1, 7)``.
    """

    lengthscale: float = 1.0                 # Matern
    period: float = 1.0
    variance: float = 1.0
    periodic_lengthscale: float = 1.0        # smoothness of one cycle (periodic kernels)
    order: int = 6
    decay_lengthscale: float | None = None   # quasi-periodic envelope; default 5 periods
    periods: tuple[float, ...] = ()


KERNELS: dict[str, Callable[[KernelInit], Kernel]] = {
    "matern12": lambda c: Matern12(c.lengthscale, c.variance),
    "matern32": lambda c: Matern32(c.lengthscale, c.variance),
    "matern52": lambda c: Matern52(c.lengthscale, c.variance),
    "periodic": lambda c: Periodic(c.period, c.periodic_lengthscale, c.variance, c.order),
    "quasiperiodic": lambda c: QuasiPeriodic(c.period, c.periodic_lengthscale,
                                             c.decay_lengthscale or 5 * c.period, c.variance,
                                             c.order),
}
PERIODIC = ("periodic", "quasiperiodic")
# meaning of a factor's positional argument, and the KernelInit field each keyword sets
POSITIONAL = {"matern12": "lengthscale", "matern32": "lengthscale", "matern52": "lengthscale",
              "periodic": "period", "quasiperiodic": "period"}
_MATERN = {"lengthscale": "lengthscale", "variance": "variance"}
_PERIODIC = {"period": "period", "lengthscale": "periodic_lengthscale", "variance": "variance",
             "order": "order"}
KEYWORDS: dict[str, dict[str, str]] = {      # spec keyword -> KernelInit field, per kernel
    "matern12": _MATERN, "matern32": _MATERN, "matern52": _MATERN, "periodic": _PERIODIC,
    "quasiperiodic": {**_PERIODIC, "decay": "decay_lengthscale"}}
_FACTOR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


@dataclass(frozen=True)
class Factor:
    """One kernel of a spec: its name and the hyperparameters the spec sets."""

    name: str
    values: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        if not self.values:
            return self.name
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.values)
        return f"{self.name}({args})"


def _fmt(value) -> str:
    """A float or a 0-d tensor as 6 significant digits."""
    return f"{float(value.detach() if hasattr(value, 'detach') else value):.6g}"


def split_spec(spec: str) -> list[list[Factor]]:
    """The spec as a sum (outer list) of products (inner lists) of factors."""
    if not spec.strip():
        raise ConfigError("empty kernel spec")
    terms, depth, start, current = [], 0, 0, []
    for i, ch in enumerate(spec + "+"):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise ConfigError(f"unbalanced ')' in kernel spec {spec!r}")
        if depth == 0 and ch in "+*":
            current.append(parse_factor(spec[start:i], spec))
            start = i + 1
            if ch == "+":
                terms.append(current)
                current = []
    if depth != 0:
        raise ConfigError(f"unbalanced '(' in kernel spec {spec!r}")
    return terms


def parse_factor(text: str, spec: str) -> Factor:
    """``name`` or ``name(arg, key=value, ...)`` -> Factor; one clear error otherwise."""
    match = _FACTOR.match(text)
    if not match:
        raise ConfigError(f"cannot read kernel {text.strip()!r} in {spec!r}; write e.g. "
                          "'matern52', 'periodic(24)' or 'periodic(period=24, lengthscale=0.5)'")
    name, args = match.group(1).lower(), match.group(2)
    if name not in KERNELS:
        raise ConfigError(f"unknown kernel {name!r} in {spec!r}; known: {sorted(KERNELS)}")
    values: dict[str, float] = {}
    for i, arg in enumerate(args.split(",") if args and args.strip() else []):
        key, sep, raw = arg.partition("=")
        key = key.strip().lower() if sep else POSITIONAL[name]
        raw = raw if sep else arg
        if sep and key not in KEYWORDS[name]:
            raise ConfigError(f"kernel {name!r} in {spec!r} has no hyperparameter {key!r}; "
                              f"it has: {sorted(KEYWORDS[name])}")
        if not sep and i > 0:
            raise ConfigError(f"kernel {name!r} in {spec!r}: only the first argument may be "
                              "positional; name the others (e.g. lengthscale=0.5)")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"kernel {name!r} in {spec!r}: {raw.strip()!r} is not a "
                              "number") from None
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"kernel {name!r} in {spec!r}: {key} must be positive and "
                              f"finite, got {raw.strip()}")
        values[key] = value
    return Factor(name, tuple(values.items()))


def parse_kernel(spec: str, init: KernelInit | None = None) -> Kernel:
    """Build a kernel from a spec such as ``"matern52+quasiperiodic"``,
    ``"matern32*periodic"`` or ``"matern52 + periodic(1) + periodic(7)"``."""
    init = init or KernelInit()
    terms = split_spec(spec)
    periodic_index = 0

    def build(factor: Factor) -> Kernel:
        nonlocal periodic_index
        values = dict(factor.values)
        c = init
        if factor.name in PERIODIC and "period" not in values:
            periods = init.periods
            c = replace(c, period=periods[periodic_index] if periodic_index < len(periods)
                        else init.period)
            periodic_index += 1
        if "order" in values:
            if values["order"] != int(values["order"]):
                raise ConfigError(f"kernel {factor} in {spec!r}: order must be an integer")
            values["order"] = int(values["order"])
        c = replace(c, **{KEYWORDS[factor.name][k]: v for k, v in values.items()})
        return KERNELS[factor.name](c)

    built = [reduce(lambda a, b: a * b, [build(f) for f in term]) for term in terms]
    return reduce(lambda a, b: a + b, built)


def count_periodic(spec: str) -> int:
    """How many (quasi-)periodic parts of the spec set no period of their own."""
    return sum(f.name in PERIODIC and "period" not in dict(f.values)
               for term in split_spec(spec) for f in term)


def kernel_spec(kernel: Kernel) -> str:
    """The spec that rebuilds ``kernel`` with its current hyperparameters, e.g.
    ``"matern52(lengthscale=4.49, variance=0.475) + periodic(period=0.9998, ...)"``:
    what a kernel search reports and what ``--kernel`` accepts back."""
    from dynvae.gp.kernels.composite import Product, Sum
    from dynvae.gp.kernels.matern import Matern

    if isinstance(kernel, Sum):
        return " + ".join(kernel_spec(k) for k in kernel.kernels)
    if isinstance(kernel, QuasiPeriodic):
        envelope, cycle = kernel.left, kernel.right
        return (f"quasiperiodic(period={_fmt(cycle.period)}, "
                f"lengthscale={_fmt(cycle.lengthscale)}, "
                f"decay={_fmt(envelope.lengthscale)}, "
                f"variance={_fmt(envelope.variance)}, order={cycle.order})")
    if isinstance(kernel, Product):
        return f"{kernel_spec(kernel.left)} * {kernel_spec(kernel.right)}"
    if isinstance(kernel, Periodic):
        return (f"periodic(period={_fmt(kernel.period)}, "
                f"lengthscale={_fmt(kernel.lengthscale)}, "
                f"variance={_fmt(kernel.variance)}, order={kernel.order})")
    if isinstance(kernel, Matern):
        name = {Matern12: "matern12", Matern32: "matern32", Matern52: "matern52"}[type(kernel)]
        return (f"{name}(lengthscale={_fmt(kernel.lengthscale)}, "
                f"variance={_fmt(kernel.variance)})")
    raise ConfigError(f"no spec for kernel {type(kernel).__name__}")
