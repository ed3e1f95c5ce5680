"""Training loops, checkpoints and experiments."""
