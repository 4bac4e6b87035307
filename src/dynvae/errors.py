"""Exceptions raised on bad input or failed numerics, so that callers can catch them by type.

``NumericalError`` subclasses ``torch.linalg.LinAlgError``; it is built on first use, so
that importing this module (as the command line does before any command runs) does not
import torch."""

from __future__ import annotations


class DataError(ValueError):
    """Input data is malformed: wrong shape, non-increasing times, inf, unknown column..."""


class ConfigError(ValueError):
    """A configuration value is unknown or inconsistent."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or does not match the model."""


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra to install."""


def _numerical_error() -> type:
    from torch.linalg import LinAlgError

    class NumericalError(LinAlgError):
        """A computation lost its numerical meaning: non-finite or exploding moments, a
        covariance that stopped being positive definite. The message names the engine and
        the step. A subclass of ``torch.linalg.LinAlgError``, so code that backs off from
        degenerate parameters (e.g. an optimiser's line search) catches it like a failed
        factorisation."""

    NumericalError.__module__ = __name__
    return NumericalError


def __getattr__(name: str):
    if name == "NumericalError":
        globals()[name] = cls = _numerical_error()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
