"""Training loop, evaluation loop, checkpoints and distributed helpers."""
