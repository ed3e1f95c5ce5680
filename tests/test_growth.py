import pytest

from drustage.growth import (BOY_DELAY_YEARS, PatientInfo, continuous_stage, discordance, expected_stage_for_age,
                             implausible_for_age, mean_age_at, stage_distribution)
from drustage.stages import Stage, all_stages


def test_the_growth_tables_landmark_ages_hold_for_girls_and_boys_come_later():
    assert mean_age_at(Stage("radius", 7), "F") == 11.4
    assert mean_age_at(Stage("radius", 10), "F") == 15.6
    assert mean_age_at(Stage("ulna", 5), "F") == 11.0
    assert mean_age_at(Stage("ulna", 9), "F") == 17.3
    assert mean_age_at(Stage("radius", 7), "M") == pytest.approx(11.4 + BOY_DELAY_YEARS)
    assert mean_age_at(Stage("radius", 7), None) == pytest.approx(11.4 + BOY_DELAY_YEARS / 2)
    assert expected_stage_for_age("radius", 11.4, "F") == Stage("radius", 7)
    assert expected_stage_for_age("radius", 11.4, "M").index < 7


@pytest.mark.parametrize("bone", ["radius", "ulna"])
def test_continuous_stage_rises_with_age_and_stays_on_the_scale(bone):
    values = [continuous_stage(bone, age / 4, "F") for age in range(0, 100)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[0] == 1.0 and int(values[-1]) == len(all_stages(bone))


def test_stage_distribution_is_a_distribution_centred_on_the_age():
    p = stage_distribution("radius", 11.4, "F")
    assert sum(p) == pytest.approx(1.0) and max(range(11), key=p.__getitem__) == 6  # R7
    boys = stage_distribution("radius", 11.4, "M")
    assert max(range(11), key=boys.__getitem__) < 6
    wide, narrow = stage_distribution("ulna", 12, "F", spread=2.0), stage_distribution("ulna", 12, "F", spread=0.3)
    assert max(narrow) > max(wide)


def test_the_issues_two_wrong_reads_are_implausible_and_ordinary_ones_are_not():
    reason = implausible_for_age(Stage("radius", 9), 4.0, "F")
    assert reason == "R9 is implausible for the patient's age (more than 4 y before the mean age at R9)"
    assert "4.0" not in reason and "girl" not in reason  # neither the age nor the sex is echoed
    assert "after the mean age at R6" in implausible_for_age(Stage("radius", 6), 18.0, "M")
    assert implausible_for_age(Stage("radius", 10), 11.0, "F")  # mature below 12 in a girl
    assert implausible_for_age(Stage("radius", 7), 11.4, "F") is None
    assert implausible_for_age(Stage("radius", 7), 14.0, "M") is None  # a late boy
    # the scale's open ends: nothing is past the last stage or before the first
    assert implausible_for_age(Stage("radius", 11), 30.0, "F") is None
    assert implausible_for_age(Stage("ulna", 1), 0.5, "M") is None
    assert implausible_for_age(Stage("ulna", 2), 0.5, "M") is not None  # boys' U2: 9.2 y


def test_radius_and_ulna_too_far_apart_are_discordant():
    assert discordance(Stage("radius", 7), Stage("ulna", 5)) is None
    assert discordance(Stage("radius", 11), Stage("ulna", 9)) is None
    assert "R11" in discordance(Stage("radius", 11), Stage("ulna", 3))


def test_patient_info_checks_what_it_is_given():
    assert PatientInfo("f", 12).sex == "F" and PatientInfo(" ", None).sex is None
    assert not PatientInfo().known and PatientInfo(age_years=3).known
    for sex, age in (("X", None), (None, -1), (None, float("nan")), (None, 200)):
        with pytest.raises(ValueError):
            PatientInfo(sex, age)
