"""Seeded, stratified train/validation/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices into the labelled items
    validation: np.ndarray
    test: np.ndarray


def _per_class_take(labels: np.ndarray, pool: np.ndarray, count: int | float, rng: np.random.Generator,
                    what: str) -> np.ndarray:
    """From ``pool`` take ``count`` per class (an int) or that fraction of each class (a float)."""
    taken = []
    for cls in np.unique(labels[pool]):
        members = pool[labels[pool] == cls]
        members = members[rng.permutation(len(members))]
        n = int(count) if isinstance(count, (int, np.integer)) else int(round(count * len(members)))
        if isinstance(count, (int, np.integer)) and n >= len(members):
            raise ValueError(
                f"class {cls} has {len(members)} items; cannot hold out {n} for {what} and keep any to train on"
            )
        taken.append(members[:n])
    return np.sort(np.concatenate(taken)) if taken else np.array([], dtype=int)


def stratified_split(labels, test: int | float, validation: int | float, seed: int) -> Split:
    """Hold out ``test`` then ``validation`` items per class (int) or per-class fraction (float).

    The paper holds out a fixed number per class (50 ulna, 25 radius); validation is carved from
    what remains for training. Deterministic for a seed.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError("labels must be a non-empty 1-D sequence")
    for name, value in (("test", test), ("validation", validation)):
        if isinstance(value, float) and not 0.0 <= value < 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1), got {value}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"{name} count must be >= 0, got {value}")
    rng = np.random.default_rng(seed)
    everything = np.arange(len(labels))
    test_idx = _per_class_take(labels, everything, test, rng, "test")
    rest = np.setdiff1d(everything, test_idx)
    val_idx = _per_class_take(labels, rest, validation, rng, "validation")
    train_idx = np.setdiff1d(rest, val_idx)
    return Split(train_idx, val_idx, test_idx)
