import pytest

from drustage.stages import (
    GROWTH_EVENTS, PHASES, Stage, all_stages, bracing_guidance, get_scheme, growth_events_at,
    parse_stage, scheme_from_dict, stages_in_phase, withheld_guidance,
)


def test_stage_counts_and_descriptions():
    assert [s.code for s in all_stages("radius")] == [f"R{i}" for i in range(1, 12)]
    assert [s.code for s in all_stages("ulna")] == [f"U{i}" for i in range(1, 10)]
    assert "styloid" in Stage("ulna", 4).description
    assert "sclerotic" in Stage("radius", 10).description


@pytest.mark.parametrize("code,phase", [
    ("R1", "pre-peak"), ("R6", "pre-peak"), ("R7", "peak"), ("R8", "deceleration"), ("R9", "deceleration"),
    ("R10", "mature"), ("R11", "mature"),
    ("U1", "pre-peak"), ("U3", "pre-peak"), ("U4", "peak"), ("U5", "peak"), ("U6", "deceleration"),
    ("U7", "deceleration"), ("U8", "mature"), ("U9", "mature"),
])
def test_every_phase_boundary(code, phase):
    assert parse_stage(code).phase == phase


def test_stages_in_phase():
    assert [s.code for s in stages_in_phase("radius", "deceleration")] == ["R8", "R9"]
    assert [s.code for s in stages_in_phase("ulna", "peak")] == ["U4", "U5"]
    with pytest.raises(ValueError, match="unknown phase"):
        stages_in_phase("ulna", "growth")


@pytest.mark.parametrize("text,bone,code", [("R7", None, "R7"), ("u5", None, "U5"), (7, "radius", "R7"),
                                            ("9", "ulna", "U9"), (8.0, "radius", "R8")])
def test_parse_stage_accepts(text, bone, code):
    assert parse_stage(text, bone).code == code


@pytest.mark.parametrize("text,bone,message", [
    ("R12", None, "1..11"), ("U10", None, "1..9"), ("U0", None, "1..9"), ("X3", None, "not a DRU stage"),
    ("7", None, "no R/U prefix"), ("R5", "ulna", "radius stage"), ("", None, "not a DRU stage"),
])
def test_parse_stage_rejects(text, bone, message):
    with pytest.raises(ValueError, match=message):
        parse_stage(text, bone)


def test_stage_scheme():
    radius = get_scheme("stage", "radius")
    assert radius.num_classes == 11 and radius.class_of("R1") == 0 and radius.class_of("R11") == 10
    ulna = get_scheme("stage", "ulna")
    assert ulna.num_classes == 9 and ulna.class_of("U9") == 8


@pytest.mark.parametrize("bone", ["radius", "ulna"])
def test_phase4_scheme_matches_phase_table(bone):
    scheme = get_scheme("phase4", bone)
    assert scheme.classes == PHASES
    for stage in all_stages(bone):
        assert scheme.classes[scheme.class_of(stage)] == stage.phase


def test_phase3_scheme_drops_pre_peak():
    scheme = get_scheme("phase3", "ulna")
    assert scheme.classes == ("peak", "deceleration", "mature")
    assert [scheme.class_of(f"U{i}") for i in range(1, 10)] == [None, None, None, 0, 0, 1, 1, 2, 2]
    assert [s.code for s in scheme.stages_of(1)] == ["U6", "U7"]
    assert scheme.phase_of_class(2) == "mature"


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(ValueError, match="stage, phase4, phase3"):
        get_scheme("phase5", "radius")
    with pytest.raises(ValueError, match="unknown bone"):
        get_scheme("stage", "femur")


def test_scheme_round_trip_and_mismatch():
    scheme = get_scheme("phase4", "radius")
    assert scheme_from_dict(scheme.to_dict()) == scheme
    with pytest.raises(ValueError, match="has classes"):
        scheme_from_dict({"name": "phase4", "bone": "radius", "classes": ["a", "b"]})


def test_growth_events_table():
    peaks = [e for e in GROWTH_EVENTS if e.event == "peak"]
    assert all(e.radius.code == "R7" for e in peaks)
    assert {e.ulna.code for e in peaks} == {"U4", "U5"}
    cessation = {e.measure: (e.radius.code, e.ulna.code) for e in GROWTH_EVENTS if e.event == "cessation"}
    assert cessation == {"standing height": ("R9", "U9"), "sitting height": ("R9", "U9"),
                         "arm span": ("R11", "U9"), "long bones": ("R11", "U9")}
    measures = {e.measure for e in growth_events_at("R7", "U1")}
    assert measures == {"standing height", "sitting height", "arm span", "long bones"}


@pytest.mark.parametrize("radius,ulna,rule", [
    ("R11", "U9", "mature"),
    ("R10", "U9", "near-mature"),
    ("R11", "U8", "near-mature"),
    ("mature", "mature", "near-mature"),
    ("R8", "U6", "stop-bracing"),
    ("R9", "U5", "stop-bracing"),
    ("R10", "U7", "stop-bracing"),
    ("deceleration", "peak", "stop-bracing"),
    ("R7", "U5", "start-bracing"),
    ("R7", "U4", "start-bracing"),
    ("peak", "peak", "start-bracing"),
    ("R7", "U3", "peak-discordant"),
    ("R7", "U6", "peak-discordant"),
    ("R6", "U5", "pre-peak"),
    ("R1", "U1", "pre-peak"),
    ("pre-peak", "peak", "pre-peak"),
])
def test_bracing_rules(radius, ulna, rule):
    guidance = bracing_guidance(radius, ulna)
    assert guidance.rule == rule
    assert "not a diagnosis" in guidance.disclaimer
    assert guidance.to_dict()["rule"] == rule


def test_bracing_guidance_reports_inputs():
    guidance = bracing_guidance("R7", "peak")
    assert guidance.radius_stage == "R7" and guidance.ulna_stage is None
    assert guidance.radius_phase == "peak" and guidance.ulna_phase == "peak"
    assert "fusion surgery can be considered" in bracing_guidance("R11", "U9").wording


def test_withheld_guidance_gives_no_advice_and_keeps_the_reading():
    guidance = withheld_guidance("R9", "U2", "radius and ulna are further apart than the growth table allows")
    assert guidance.rule == "withheld" and "bracing" not in guidance.action
    assert guidance.wording.startswith("No bracing guidance: radius and ulna are further apart")
    assert "can be stopped" not in guidance.wording and "not a diagnosis" in guidance.disclaimer
    assert (guidance.radius_stage, guidance.radius_phase, guidance.ulna_stage) == ("R9", "deceleration", "U2")


def test_bracing_guidance_rejects_bad_input():
    with pytest.raises(ValueError):
        bracing_guidance("U7", "U5")
    with pytest.raises(ValueError):
        bracing_guidance("R7", "growing")
