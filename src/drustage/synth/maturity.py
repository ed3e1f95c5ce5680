"""Who the phantoms are: sex, age and correlated radius/ulna maturity.

A latent skeletal maturity ``z`` (a bone age in years) is drawn from age and sex; each bone's
continuous stage is read from ``z`` plus a small bone-specific deviation, so radius and ulna
stages are strongly but not perfectly correlated, as in real children. Stages are read from the
age-per-stage table of ``drustage.growth`` on its girls' scale (the sex shift below moves boys).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drustage.growth import age_at_continuous_stage, continuous_stage
from drustage.stages import Bone, Stage

# Girls mature earlier than boys for the same chronological age.
_SEX_SHIFT_YEARS = {"F": 0.6, "M": -0.5}
_INDIVIDUAL_SD_YEARS = 0.7  # spread of bone age around chronological age
_BONE_SD_YEARS = 0.35  # radius/ulna discordance within one child


@dataclass(frozen=True)
class Subject:
    sex: str  # "F" or "M"
    age_years: float
    radius_maturity: float  # continuous stage in [1, 12): floor is the stage index
    ulna_maturity: float  # continuous stage in [1, 10)

    @property
    def radius_stage(self) -> Stage:
        return Stage("radius", int(self.radius_maturity))

    @property
    def ulna_stage(self) -> Stage:
        return Stage("ulna", int(self.ulna_maturity))


def sample_subject(rng: np.random.Generator, age_range: tuple[float, float]) -> Subject:
    sex = "F" if rng.random() < 0.5 else "M"
    age = float(rng.uniform(*age_range))
    bone_age = age + _SEX_SHIFT_YEARS[sex] + rng.normal(0.0, _INDIVIDUAL_SD_YEARS)
    return Subject(
        sex=sex,
        age_years=round(age, 2),
        radius_maturity=continuous_stage("radius", bone_age + rng.normal(0.0, _BONE_SD_YEARS)),
        ulna_maturity=continuous_stage("ulna", bone_age + rng.normal(0.0, _BONE_SD_YEARS)),
    )


def bone_age_of(subject: Subject) -> float:
    """The latent bone age implied by the subject's stages (mean of both bones)."""
    return 0.5 * (
        age_at_continuous_stage("radius", subject.radius_maturity)
        + age_at_continuous_stage("ulna", subject.ulna_maturity)
    )


@dataclass(frozen=True)
class StageQuota:
    """At least ``count`` subjects whose ``bone`` stage lies in ``first..last`` (inclusive)."""

    bone: Bone
    first: int
    last: int
    count: int

    def holds(self, subject: Subject) -> bool:
        stage = subject.radius_stage if self.bone == "radius" else subject.ulna_stage
        return self.first <= stage.index <= self.last


def sample_cohort(
    count: int,
    seed: int,
    age_range: tuple[float, float] = (4.0, 18.5),
    quotas: tuple[StageQuota, ...] = (),
) -> list[Subject]:
    """``count`` subjects, deterministic from ``seed``.

    With quotas, candidates are drawn from the same population and kept while they fill a quota
    that is still short; once every quota is met, candidates are kept as they come. This keeps
    the radius/ulna correlation of the population while guaranteeing the class counts a
    protocol needs. Every kept subject fills a quota until all are met, so ``count`` at least
    the sum of the quotas always suffices.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if count < sum(q.count for q in quotas):
        raise ValueError(f"count {count} is smaller than the quotas' total {sum(q.count for q in quotas)}")
    rng = np.random.default_rng(seed)
    filled = [0] * len(quotas)
    subjects: list[Subject] = []
    attempts = 0
    while len(subjects) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ValueError("could not meet the stage quotas; widen the age range or raise count")
        subject = sample_subject(rng, age_range)
        short = [i for i, q in enumerate(quotas) if filled[i] < q.count]
        if short and not any(quotas[i].holds(subject) for i in short):
            continue
        subjects.append(subject)
        for i, quota in enumerate(quotas):
            if quota.holds(subject):
                filled[i] += 1
    return subjects
