"""Trainers draw from torch's global generators (layer initialisation, dropout): each run seeds
them from its config and hands the caller's state back afterwards."""

from __future__ import annotations

import functools

__all__ = ["seeded_run"]


def seeded_run(trainer):
    """Wrap ``trainer(dataset, config, ...)``: torch's generators seeded with ``config.seed`` for the
    run (repeatable), the caller's random state restored after it (never changed from outside)."""

    @functools.wraps(trainer)
    def run(*args, **kwargs):
        import torch

        config = args[1] if len(args) > 1 else kwargs["config"]
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            return trainer(*args, **kwargs)

    return run
