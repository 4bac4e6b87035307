"""dynvae: dynamical variational autoencoders in PyTorch.

Linear Gaussian state-space models with exact Kalman inference, state-space
Gaussian processes, SDE solvers, and deep dynamical VAEs (DKF, VRNN, GP-VAE,
latent SDE), all handling missing values and irregular sampling through one
data type, :class:`dynvae.data.SequenceBatch`.
"""

from dynvae.data.batch import SequenceBatch

__version__ = "0.1.0"

__all__ = ["SequenceBatch", "__version__"]
