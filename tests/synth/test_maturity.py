import numpy as np
import pytest

from drustage.growth import continuous_stage
from drustage.synth.maturity import StageQuota, sample_cohort
from drustage.synth.writer import PAPER_QUOTAS


def test_stage_follows_growth_table():
    assert int(continuous_stage("radius", 11.4)) == 7
    assert int(continuous_stage("radius", 15.6)) == 10
    assert int(continuous_stage("ulna", 11.0)) == 5
    assert int(continuous_stage("ulna", 17.3)) == 9
    ages = np.linspace(3, 20, 50)
    values = [continuous_stage("radius", a) for a in ages]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert min(values) >= 1.0 and max(values) < 12.0


def test_radius_and_ulna_are_correlated_not_identical():
    cohort = sample_cohort(400, seed=1)
    r = np.array([s.radius_maturity for s in cohort])
    u = np.array([s.ulna_maturity for s in cohort])
    correlation = np.corrcoef(r, u)[0, 1]
    assert 0.85 < correlation < 0.995
    # girls are more mature than boys of the same age
    girls = [s.radius_maturity - continuous_stage("radius", s.age_years) for s in cohort if s.sex == "F"]
    boys = [s.radius_maturity - continuous_stage("radius", s.age_years) for s in cohort if s.sex == "M"]
    assert np.mean(girls) > np.mean(boys)


def test_cohort_is_deterministic():
    assert sample_cohort(20, seed=5) == sample_cohort(20, seed=5)
    assert sample_cohort(20, seed=5) != sample_cohort(20, seed=6)


def test_paper_quotas_are_met():
    cohort = sample_cohort(1101, seed=2019, age_range=(6.0, 18.5), quotas=PAPER_QUOTAS)
    assert len(cohort) == 1101
    for quota in PAPER_QUOTAS:
        assert sum(quota.holds(s) for s in cohort) >= quota.count, quota


def test_impossible_quota_is_refused():
    with pytest.raises(ValueError, match="quotas' total"):
        sample_cohort(10, seed=0, quotas=(StageQuota("radius", 7, 7, 20),))
