"""Exceptions raised on bad input, so that callers can catch them by type."""


class DataError(ValueError):
    """Input data is malformed: wrong shape, non-increasing times, inf, unknown column..."""


class ConfigError(ValueError):
    """A configuration value is unknown or inconsistent."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or does not match the model."""


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra to install."""
