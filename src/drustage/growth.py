"""Age per DRU stage: the expected age of each stage by sex, stage distributions implied by an
age, and whether a reading is plausible for a patient's age and sex.

The table anchors on the growth table of Luk et al. (mean ages R7 11.4 y, R10 15.6 y, U5 11.0 y,
U9 17.3 y; about 1.1 y between early stages) and is stated for girls, who make up most of the
scoliosis cohorts it comes from. Boys reach each stage later (`BOY_DELAY_YEARS`; in the
Greulich-Pyle atlas boys fuse their distal radius about 1.5-2 years after girls). The ages hold
for chronological and for bone age alike; a bone age is the tighter reference.

Plain Python, no numpy: like ``stages.py`` this is clinical knowledge every rule can test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drustage.stages import N_STAGES, Bone, Stage, check_bone

__all__ = ["PatientInfo", "SEXES", "discordance", "expected_stage_for_age", "implausible_for_age", "mean_age_at",
           "stage_distribution"]

# Age (years, girls) at the middle of each stage; a continuous stage k + 0.5 sits there.
STAGE_MID_AGE: dict[Bone, tuple[float, ...]] = {
    "radius": (4.8, 5.9, 7.0, 8.1, 9.2, 10.3, 11.4, 12.8, 14.2, 15.6, 17.2),
    "ulna": (6.6, 7.7, 8.8, 9.9, 11.0, 12.5, 14.0, 15.5, 17.3),
}
BOY_DELAY_YEARS = 1.5
# A reading further than this from its stage's mean age (and beyond the scale's open ends: no
# upper limit for the last stage, no lower one for the first) is implausible for the patient.
# Four years is about three standard deviations of bone age around chronological age, so a
# child who is merely early or late is not flagged, while "mature at 10" or "pre-peak at 16" is.
PLAUSIBLE_AGE_MARGIN_YEARS = 4.0
# Radius and ulna stages whose mean ages lie further apart than this disagree beyond what one
# child shows (the growth table pairs R7 with U4-U5, R9/R11 with U9).
DISCORDANCE_YEARS = 3.0
SEXES = ("F", "M")


def check_sex(sex: str | None) -> str | None:
    """``F``, ``M`` or None (unknown); other spellings (female, male, 0/1) are refused."""
    if sex is None:
        return None
    value = str(sex).strip().upper()
    if value in ("", "O", "U"):
        return None
    if value not in SEXES:
        raise ValueError(f"sex must be F or M (or blank), got {sex!r}")
    return value


def _delay(sex: str | None) -> float:
    # unknown sex: halfway, so neither reference is favoured
    return {"F": 0.0, "M": BOY_DELAY_YEARS}.get(sex or "", BOY_DELAY_YEARS / 2)


def mean_age_at(stage: Stage, sex: str | None = None) -> float:
    """Mean age (years) of children at ``stage``, for a sex (None: between girls and boys)."""
    return STAGE_MID_AGE[stage.bone][stage.index - 1] + _delay(check_sex(sex))


def continuous_stage(bone: Bone, age: float, sex: str | None = "F") -> float:
    """Continuous stage (``k + fraction``) of a bone at an age, clipped to the scale.

    Linear between the stages' mean ages, extrapolated with the end intervals outside them.
    The default sex "F" reads the table as it is written (the phantoms' maturity scale).
    """
    mids = STAGE_MID_AGE[check_bone(bone)]
    age = age - _delay(check_sex(sex))
    if age <= mids[0]:
        value = 1.5 + (age - mids[0]) / (mids[1] - mids[0])
    elif age >= mids[-1]:
        value = len(mids) + 0.5 + (age - mids[-1]) / (mids[-1] - mids[-2])
    else:
        k = next(i for i in range(len(mids) - 1) if mids[i] <= age < mids[i + 1])
        value = k + 1.5 + (age - mids[k]) / (mids[k + 1] - mids[k])
    return min(max(value, 1.0), N_STAGES[bone] + 0.999)


def age_at_continuous_stage(bone: Bone, stage_value: float) -> float:
    """Inverse of ``continuous_stage`` (girls' scale) inside the table's range."""
    mids = STAGE_MID_AGE[check_bone(bone)]
    position = min(max(stage_value - 1.5, 0.0), len(mids) - 1.0)
    k = min(int(position), len(mids) - 2)
    return mids[k] + (position - k) * (mids[k + 1] - mids[k])


def stage_distribution(bone: Bone, age: float, sex: str | None, spread: float = 0.8) -> list[float]:
    """Probability of each stage (index 0 is stage 1) for a child of this age and sex.

    A normal distribution over the continuous stage the age implies, ``spread`` stages wide (one
    standard deviation), discretised at stage centres. It is the weak target a film with a known
    age gives a classifier that has no stage label for it.
    """
    centre = continuous_stage(bone, age, sex)
    weights = [math.exp(-0.5 * ((k + 1.5 - centre) / spread) ** 2) for k in range(N_STAGES[bone])]
    total = sum(weights)
    return [w / total for w in weights]


def expected_stage_for_age(bone: Bone, age: float, sex: str | None) -> Stage:
    """The stage whose span holds the age (the integer part of the continuous stage)."""
    return Stage(bone, int(continuous_stage(bone, age, sex)))


@dataclass(frozen=True)
class PatientInfo:
    """What the user told about the patient, for the plausibility checks only."""

    sex: str | None = None
    age_years: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sex", check_sex(self.sex))
        if self.age_years is not None:
            age = float(self.age_years)
            if not (math.isfinite(age) and 0 <= age <= 30):
                raise ValueError(f"age must be between 0 and 30 years, got {self.age_years!r}")
            object.__setattr__(self, "age_years", age)

    @property
    def known(self) -> bool:
        return self.sex is not None or self.age_years is not None


def implausible_for_age(stage: Stage, age: float, sex: str | None) -> str | None:
    """Why ``stage`` is implausible at ``age`` (years) for ``sex``, or None when it is plausible.

    The reason names neither the age nor the sex: they may come from a DICOM header, and only
    what the user gave may reach a result."""
    mean = mean_age_at(stage, sex)
    margin = PLAUSIBLE_AGE_MARGIN_YEARS
    if age < mean - margin and stage.index > 1:
        return (f"{stage.code} is implausible for the patient's age (more than {margin:g} y before the mean age "
                f"at {stage.code})")
    if age > mean + margin and stage.index < N_STAGES[stage.bone]:
        return (f"{stage.code} is implausible for the patient's age (more than {margin:g} y after the mean age "
                f"at {stage.code})")
    return None


def discordance(radius: Stage, ulna: Stage) -> str | None:
    """Why a radius and an ulna stage cannot come from one child, or None when they agree."""
    gap = mean_age_at(radius, "F") - mean_age_at(ulna, "F")
    if abs(gap) > DISCORDANCE_YEARS:
        return (f"radius {radius.code} and ulna {ulna.code} are {abs(gap):.1f} y apart on the growth table "
                f"(more than {DISCORDANCE_YEARS:g} y): one of them is likely misread")
    return None
