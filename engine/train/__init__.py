"""Training: vectorised batches, losses, the fit loop, checkpoints and run events."""
