"""Who the phantoms are: sex, age and correlated radius/ulna maturity.

A latent skeletal maturity ``z`` (a bone age in years) is drawn from age and sex; each bone's
continuous stage is read from ``z`` plus a small bone-specific deviation, so radius and ulna
stages are strongly but not perfectly correlated, as in real children. The anchor ages follow
the growth table (mean ages R7 11.4 y, R10 15.6 y, U5 11.0 y, U9 17.3 y; about 1.1 y between
early stages).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drustage.stages import N_STAGES, Bone, Stage

# Age (bone-age years) at the middle of each stage; a continuous stage k + 0.5 sits there.
_STAGE_MID_AGE: dict[Bone, tuple[float, ...]] = {
    "radius": (4.8, 5.9, 7.0, 8.1, 9.2, 10.3, 11.4, 12.8, 14.2, 15.6, 17.2),
    "ulna": (6.6, 7.7, 8.8, 9.9, 11.0, 12.5, 14.0, 15.5, 17.3),
}
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


def continuous_stage(bone: Bone, bone_age: float) -> float:
    """Continuous stage (``k + fraction``) of a bone at a bone age, clipped to the scale."""
    mids = np.asarray(_STAGE_MID_AGE[bone])
    stages = np.arange(1, len(mids) + 1) + 0.5
    # Extrapolate linearly with the end intervals so the extremes are not piled up on one value.
    if bone_age < mids[0]:
        value = stages[0] + (bone_age - mids[0]) / (mids[1] - mids[0])
    elif bone_age > mids[-1]:
        value = stages[-1] + (bone_age - mids[-1]) / (mids[-1] - mids[-2])
    else:
        value = float(np.interp(bone_age, mids, stages))
    return float(np.clip(value, 1.0, N_STAGES[bone] + 0.999))


def bone_age_at(bone: Bone, stage_value: float) -> float:
    """Inverse of ``continuous_stage`` inside the anchored range (for sampling by stage)."""
    mids = np.asarray(_STAGE_MID_AGE[bone])
    stages = np.arange(1, len(mids) + 1) + 0.5
    return float(np.interp(stage_value, stages, mids))


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
        bone_age_at("radius", subject.radius_maturity) + bone_age_at("ulna", subject.ulna_maturity)
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
