"""What classifier training optimises and selects by beyond cross-entropy: the within-sex
ranking loss on aged films, their Spearman correlation with age, and the calibrating temperature."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from drustage.evaluation.classification import rank_correlation

__all__ = ["RANK_SCALE", "TEMPERATURE_RANGE", "fit_temperature", "ranking_loss", "within_sex_spearman"]

# Expected-class differences (classes spread over 0..1) are multiplied by this before the logistic
# loss, so a pair one tenth of the scale apart in the right order costs softplus(-1) = 0.31.
RANK_SCALE = 10.0


def ranking_loss(logits: torch.Tensor, ages: torch.Tensor, sexes: list[str | None], margin: float) -> torch.Tensor:
    """RankNet's logistic loss over the pairs of a batch of the same sex whose ages differ by more
    than ``margin`` years: the older should have the higher expected class. Zero without such pairs."""
    classes = logits.shape[1]
    score = logits.float().softmax(1) @ torch.arange(classes, dtype=torch.float32, device=logits.device)
    score = score / max(classes - 1, 1)
    ages = ages.to(logits.device)
    codes = torch.tensor([{"F": 0, "M": 1}.get(s, -1) for s in sexes], device=logits.device)
    same_sex = (codes[:, None] == codes[None, :]) & (codes[:, None] >= 0)  # films of unknown sex stay out
    pairs = ((ages[:, None] - ages[None, :]) > margin) & same_sex
    if not bool(pairs.any()):
        return logits.sum() * 0.0
    return F.softplus(-(score[:, None] - score[None, :])[pairs] * RANK_SCALE).mean()


def within_sex_spearman(scores: np.ndarray, ages: np.ndarray, sexes: list[str | None]) -> dict[str, float]:
    """Spearman correlation of scores with age, per sex (F, M) with at least 5 films."""
    result = {}
    for sex in ("F", "M"):
        members = np.array([s == sex for s in sexes])
        correlation = rank_correlation(scores[members], ages[members], minimum=5)
        if correlation is not None:
            result[sex] = correlation
    return result


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: torch.Tensor, labels: np.ndarray) -> float:
    """The temperature in ``TEMPERATURE_RANGE`` minimising the validation cross-entropy (Guo et
    al.'s scaling). Searched on its logarithm within the range (bounded Brent): on crops the
    model separates perfectly the loss falls towards zero temperature, and an unbounded search
    ran off to NaN there."""
    from scipy.optimize import minimize_scalar

    logits = logits.detach().double()
    targets = torch.from_numpy(np.asarray(labels))

    def loss(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), targets))

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    found = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(found.x))
