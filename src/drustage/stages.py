"""Luk DRU stages of the distal radius (R1–R11) and ulna (U1–U9), class schemes, growth events
and scoliosis bracing guidance.

Everything here is plain data and pure functions (no numpy, no torch) so it is the one place the
clinical knowledge lives and every rule can be tested directly. Source: Luk et al. (DRU
classification) as summarised in the reference paper; see ``shared/reference/dru-method.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["BracingGuidance", "ClassScheme", "DISCLAIMER", "GrowthEvent", "Stage", "all_stages", "bracing_guidance",
           "get_scheme", "growth_events_at", "parse_stage", "phase_of", "scheme_from_dict", "stages_in_phase",
           "withheld_guidance"]

Bone = Literal["radius", "ulna"]
BONES: tuple[Bone, ...] = ("radius", "ulna")
BONE_PREFIX: dict[Bone, str] = {"radius": "R", "ulna": "U"}

STAGE_DESCRIPTIONS: dict[Bone, tuple[str, ...]] = {
    "radius": (
        "One or more dot-like epiphyseal ossification centres.",
        "An irregular oval epiphysis.",
        "The epiphysis' largest diameter exceeds half the width of the metaphysis.",
        "A double line appears on the distal margin of the epiphysis (palmar and dorsal surfaces).",
        "An irregular, thickened white line along the proximal margin, clearer medially, concave; "
        "the epiphysis is still narrower than the metaphysis.",
        "The epiphysis is wider than the metaphysis on both sides; the joint with the ulna starts to form.",
        "The epiphysis caps the metaphysis medially; laterally it is hemispherical.",
        "A cap appears proximally-laterally; the growth plate is clearly visible; "
        "the epiphysis' edges are wider than its middle.",
        "The epiphysis almost fully covers the metaphysis; the growth plate starts to sclerose "
        "(visible but blurred).",
        "The growth plate has disappeared into a sclerotic line, sometimes dashed; "
        "notches at its medial and lateral ends.",
        "Complete fusion; a growth-plate scar may remain.",
    ),
    "ulna": (
        "One or more dot-like epiphyseal centres.",
        "An irregular oval epiphysis.",
        "The epiphysis' largest diameter exceeds half the width of the distal ulna.",
        "The styloid process becomes visible at the medial end of the epiphysis.",
        "The ulnar head is fully formed, denser than the styloid; its border next to the metaphysis is flat.",
        "The epiphysis is as wide as the metaphysis; its proximal margin covers the middle third "
        "of the metaphysis.",
        "The growth plate narrows; epiphysis and metaphysis form a smooth curve; fusion in the middle half.",
        "An unfused growth plate is visible only under the styloid; elsewhere nearly fused.",
        "Complete fusion.",
    ),
}

N_STAGES: dict[Bone, int] = {bone: len(d) for bone, d in STAGE_DESCRIPTIONS.items()}

PHASES: tuple[str, ...] = ("pre-peak", "peak", "deceleration", "mature")

# Last stage (inclusive) of each phase, per bone: the table in dru-method.md.
_PHASE_LAST_STAGE: dict[Bone, tuple[int, int, int, int]] = {
    "radius": (6, 7, 9, 11),
    "ulna": (3, 5, 7, 9),
}


@dataclass(frozen=True)
class Stage:
    """One Luk stage: ``Stage("radius", 7)`` is R7."""

    bone: Bone
    index: int  # 1-based, as clinicians write it

    def __post_init__(self) -> None:
        check_bone(self.bone)
        if not 1 <= self.index <= N_STAGES[self.bone]:
            raise ValueError(
                f"{self.bone} stage must be 1..{N_STAGES[self.bone]}, got {self.index}"
            )

    @property
    def code(self) -> str:
        return f"{BONE_PREFIX[self.bone]}{self.index}"

    @property
    def description(self) -> str:
        return STAGE_DESCRIPTIONS[self.bone][self.index - 1]

    @property
    def phase(self) -> str:
        return phase_of(self)

    def __str__(self) -> str:
        return self.code


def check_bone(bone: str) -> Bone:
    if bone not in BONES:
        raise ValueError(f"unknown bone {bone!r}; expected one of {', '.join(BONES)}")
    return bone  # type: ignore[return-value]


def all_stages(bone: Bone) -> tuple[Stage, ...]:
    return tuple(Stage(bone, i) for i in range(1, N_STAGES[check_bone(bone)] + 1))


_STAGE_RE = re.compile(r"^\s*([RrUu])?\s*(\d{1,2})(?:\.0+)?\s*$")


def parse_stage(value: object, bone: Bone | None = None) -> Stage:
    """Parse ``"R7"``, ``"u5"``, ``7`` or ``"7"`` (the last two need ``bone``).

    Raises ``ValueError`` naming the value when it is not a stage of that bone.
    """
    if isinstance(value, Stage):
        if bone is not None and value.bone != bone:
            raise ValueError(f"{value.code} is a {value.bone} stage, expected a {bone} stage")
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    match = _STAGE_RE.match(str(value))
    if not match:
        raise ValueError(f"not a DRU stage: {value!r} (expected e.g. R7 or U5)")
    prefix, number = match.groups()
    if prefix:
        parsed_bone: Bone = "radius" if prefix.upper() == "R" else "ulna"
        if bone is not None and parsed_bone != bone:
            raise ValueError(f"{value!r} is a {parsed_bone} stage, expected a {bone} stage")
    elif bone is None:
        raise ValueError(f"stage {value!r} has no R/U prefix and no bone was given")
    else:
        parsed_bone = bone
    return Stage(parsed_bone, int(number))


def phase_of(stage: Stage) -> str:
    """Growth phase (``pre-peak``, ``peak``, ``deceleration``, ``mature``) of a stage."""
    for phase, last in zip(PHASES, _PHASE_LAST_STAGE[stage.bone]):
        if stage.index <= last:
            return phase
    raise AssertionError("unreachable: Stage validates its index")


def stages_in_phase(bone: Bone, phase: str) -> tuple[Stage, ...]:
    check_phase(phase)
    return tuple(s for s in all_stages(bone) if s.phase == phase)


def check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    return phase


# --------------------------------------------------------------------------- class schemes


@dataclass(frozen=True)
class ClassScheme:
    """How stages of one bone become classifier classes.

    ``stage_to_class[i - 1]`` is the class index of stage ``i``, or ``None`` where the scheme
    leaves that stage out (the paper's ulna ``phase3`` has no pre-peak class).
    """

    name: str
    bone: Bone
    classes: tuple[str, ...]
    stage_to_class: tuple[int | None, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_of(self, stage: Stage | str) -> int | None:
        stage = parse_stage(stage, self.bone)
        return self.stage_to_class[stage.index - 1]

    def stages_of(self, class_index: int) -> tuple[Stage, ...]:
        return tuple(
            Stage(self.bone, i + 1) for i, c in enumerate(self.stage_to_class) if c == class_index
        )

    def phase_of_class(self, class_index: int) -> str:
        """Growth phase of a class (for a stage class, the phase of that stage)."""
        phases = {s.phase for s in self.stages_of(class_index)}
        if len(phases) != 1:
            raise AssertionError(f"class {self.classes[class_index]} spans phases {phases}")
        return phases.pop()

    def phase_indices(self) -> tuple[int, ...]:
        """Index in ``PHASES`` of each class's phase (to sum class probabilities into phases)."""
        return tuple(PHASES.index(self.phase_of_class(c)) for c in range(self.num_classes))

    def to_dict(self) -> dict:
        return {"name": self.name, "bone": self.bone, "classes": list(self.classes)}


def _stage_scheme(bone: Bone) -> ClassScheme:
    stages = all_stages(bone)
    return ClassScheme("stage", bone, tuple(s.code for s in stages), tuple(range(len(stages))))


def _phase_scheme(bone: Bone, name: str, phases: tuple[str, ...]) -> ClassScheme:
    mapping = tuple(
        phases.index(s.phase) if s.phase in phases else None for s in all_stages(bone)
    )
    return ClassScheme(name, bone, phases, mapping)


SCHEME_NAMES: tuple[str, ...] = ("stage", "phase4", "phase3")


def get_scheme(name: str, bone: Bone) -> ClassScheme:
    """Class scheme by name: ``stage`` (11 radius / 9 ulna classes), ``phase4`` (four growth
    phases) or ``phase3`` (peak, deceleration, mature: the paper's ulna scheme)."""
    check_bone(bone)
    if name == "stage":
        return _stage_scheme(bone)
    if name == "phase4":
        return _phase_scheme(bone, name, PHASES)
    if name == "phase3":
        return _phase_scheme(bone, name, PHASES[1:])
    raise ValueError(f"unknown class scheme {name!r}; expected one of {', '.join(SCHEME_NAMES)}")


def scheme_from_dict(data: dict) -> ClassScheme:
    """Rebuild a scheme saved with ``ClassScheme.to_dict`` and check it still matches."""
    scheme = get_scheme(data["name"], data["bone"])
    if list(scheme.classes) != list(data["classes"]):
        raise ValueError(
            f"saved class scheme {data['name']}/{data['bone']} has classes {data['classes']}, "
            f"this version defines {list(scheme.classes)}"
        )
    return scheme


# --------------------------------------------------------------------------- growth events


@dataclass(frozen=True)
class GrowthEvent:
    measure: str
    event: Literal["peak", "cessation"]
    radius: Stage
    ulna: Stage


GROWTH_EVENTS: tuple[GrowthEvent, ...] = (
    GrowthEvent("standing height", "peak", Stage("radius", 7), Stage("ulna", 4)),
    GrowthEvent("sitting height", "peak", Stage("radius", 7), Stage("ulna", 5)),
    GrowthEvent("arm span", "peak", Stage("radius", 7), Stage("ulna", 4)),
    GrowthEvent("long bones", "peak", Stage("radius", 7), Stage("ulna", 5)),
    GrowthEvent("standing height", "cessation", Stage("radius", 9), Stage("ulna", 9)),
    GrowthEvent("sitting height", "cessation", Stage("radius", 9), Stage("ulna", 9)),
    GrowthEvent("arm span", "cessation", Stage("radius", 11), Stage("ulna", 9)),
    GrowthEvent("long bones", "cessation", Stage("radius", 11), Stage("ulna", 9)),
)

# Mean chronological ages (years) reported at landmark stages, and the mean interval between
# consecutive stages (chronological / bone age), from Luk et al. via the reference paper.
MEAN_AGE_AT_STAGE: dict[str, float] = {"R7": 11.4, "U5": 11.0, "R10": 15.6, "U9": 17.3}
MEAN_STAGE_INTERVAL_YEARS: dict[Bone, dict[str, float]] = {
    "radius": {"chronological": 1.1, "bone_age": 1.5},
    "ulna": {"chronological": 1.1, "bone_age": 1.3},
}


def growth_events_at(radius: Stage | str, ulna: Stage | str) -> list[GrowthEvent]:
    """Events whose radius or ulna landmark stage is the given one."""
    r, u = parse_stage(radius, "radius"), parse_stage(ulna, "ulna")
    return [e for e in GROWTH_EVENTS if e.radius == r or e.ulna == u]


# --------------------------------------------------------------------------- bracing guidance

DISCLAIMER = (
    "Decision support, not a diagnosis: bracing and surgery depend on curve magnitude, "
    "progression and clinical judgement."
)


@dataclass(frozen=True)
class BracingGuidance:
    """Which rule applied to a (radius, ulna) maturity reading, and what it suggests."""

    rule: str  # stable identifier, e.g. "start-bracing"
    action: str  # short label for displays
    wording: str  # one or two sentences for the clinician
    radius_phase: str
    ulna_phase: str
    radius_stage: str | None
    ulna_stage: str | None
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "action": self.action,
            "wording": self.wording,
            "radius_phase": self.radius_phase,
            "ulna_phase": self.ulna_phase,
            "radius_stage": self.radius_stage,
            "ulna_stage": self.ulna_stage,
            "disclaimer": self.disclaimer,
        }


def _stage_or_phase(value: Stage | str, bone: Bone) -> tuple[Stage | None, str]:
    if isinstance(value, str) and value in PHASES:
        return None, value
    stage = parse_stage(value, bone)
    return stage, stage.phase


def withheld_guidance(radius: Stage | str, ulna: Stage | str, why: str) -> BracingGuidance:
    """No bracing advice for a reading the checks found inconsistent (``why``: implausible for the
    patient's age, or radius and ulna too far apart): advice drawn from a reading the tool does
    not believe is the confidently wrong output it must never give."""
    return replace(bracing_guidance(radius, ulna), rule="withheld", action="withheld: review the film",
                   wording=f"No bracing guidance: {why}. Stage the film by eye before any bracing decision.")


def bracing_guidance(radius: Stage | str, ulna: Stage | str) -> BracingGuidance:
    """Scoliosis bracing guidance from the radius and ulna maturity.

    Each argument is a stage (``"R7"``, ``Stage``) or a phase name (``"peak"``). Rules, first
    match wins:

    1. ``mature``: R11 and U9, skeleton mature: fusion surgery can be considered if indicated.
    2. ``near-mature``: both in the mature phase but R11/U9 not confirmed (phase-only input, or
       R10/U8): growth is ending; confirm full fusion before surgical decisions.
    3. ``stop-bracing``: the radius has entered deceleration or later (R8+): bracing can stop.
    4. ``start-bracing``: radius and ulna both in the peak phase (typically R7/U5).
    5. ``peak-discordant``: radius at peak (R7) but ulna not (yet) at peak: treat as the peak
       window and re-assess the ulna.
    6. ``pre-peak``: radius before its peak (R1–R6): growth spurt still ahead; observe.
    """
    r_stage, r_phase = _stage_or_phase(radius, "radius")
    u_stage, u_phase = _stage_or_phase(ulna, "ulna")
    r_code = r_stage.code if r_stage else None
    u_code = u_stage.code if u_stage else None

    def result(rule: str, action: str, wording: str) -> BracingGuidance:
        return BracingGuidance(rule, action, wording, r_phase, u_phase, r_code, u_code)

    fully_fused = r_stage == Stage("radius", 11) and u_stage == Stage("ulna", 9)
    if fully_fused:
        return result(
            "mature",
            "skeletally mature",
            "Radius R11 and ulna U9: the skeleton is mature and growth-related curve "
            "progression is unlikely. Bracing is not indicated; fusion surgery can be "
            "considered if the curve warrants it.",
        )
    if r_phase == "mature" and u_phase == "mature":
        return result(
            "near-mature",
            "stop bracing; confirm maturity",
            "Radius and ulna are in the mature phase: growth is ending and bracing can stop. "
            "Confirm complete fusion (R11 and U9) before deciding on fusion surgery.",
        )
    if r_phase in ("deceleration", "mature"):
        return result(
            "stop-bracing",
            "stop bracing",
            "The radius has entered the deceleration phase (R8 or later): peak growth has "
            "passed and bracing can be stopped.",
        )
    if r_phase == "peak" and u_phase == "peak":
        return result(
            "start-bracing",
            "start bracing",
            "Radius and ulna are both in the peak growth phase (typically R7/U5): the "
            "window in which a brace is most effective. Start bracing if the curve "
            "warrants it.",
        )
    if r_phase == "peak":
        return result(
            "peak-discordant",
            "treat as peak; re-assess",
            f"The radius is at peak growth (R7) but the ulna is in the {u_phase} phase. "
            "Treat as the peak window if the curve warrants bracing, and re-assess the ulna.",
        )
    return result(
        "pre-peak",
        "observe",
        "The radius is before its growth peak (R1–R6): the growth spurt is still ahead. "
        "Observe; bracing starts when radius and ulna reach the peak phase.",
    )
