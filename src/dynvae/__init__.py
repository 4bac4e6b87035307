"""dynvae: dynamical variational autoencoders in PyTorch.

Linear Gaussian state-space models with exact Kalman inference, state-space
Gaussian processes, SDE solvers, and deep dynamical VAEs (DKF, VRNN, GP-VAE,
latent SDE), all handling missing values and irregular sampling through one
data type, `dynvae.data.SequenceBatch`.

Importing the package is cheap: torch is imported with the first name that needs
it, so the command line answers `--help` without loading it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["SequenceBatch", "__version__"]


def __getattr__(name: str):
    if name == "SequenceBatch":
        from dynvae.data.batch import SequenceBatch
        globals()[name] = SequenceBatch
        return SequenceBatch
    raise AttributeError(f"module 'dynvae' has no attribute {name!r}")
