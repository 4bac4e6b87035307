"""Training: the gradient trainer, checkpoints and metrics."""
