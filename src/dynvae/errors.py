"""Exceptions raised on bad input or failed numerics, so that callers can catch them by type."""

from torch.linalg import LinAlgError


class DataError(ValueError):
    """Input data is malformed: wrong shape, non-increasing times, inf, unknown column..."""


class ConfigError(ValueError):
    """A configuration value is unknown or inconsistent."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or does not match the model."""


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra to install."""


class NumericalError(LinAlgError):
    """A computation lost its numerical meaning: non-finite or exploding moments, a
    covariance that stopped being positive definite. The message names the engine and the
    step. A subclass of ``torch.linalg.LinAlgError``, so code that backs off from degenerate
    parameters (e.g. an optimiser's line search) catches it like a failed factorisation."""
