"""Comparing two runs' ``predict`` answers (JSON): equal, numbers to 1e-4 and boxes to 1e-3 px, since
CPUs with other vector units, or the same CPU with another thread count, round convolutions
differently in the last bits."""

from __future__ import annotations

import pytest


def assert_same(found, stored, where: str = "") -> None:
    if isinstance(stored, dict):
        assert isinstance(found, dict) and set(found) == set(stored), where
        for key in stored:
            assert_same(found[key], stored[key], f"{where}.{key}")
    elif isinstance(stored, list):
        assert isinstance(found, list) and len(found) == len(stored), where
        for index, (a, b) in enumerate(zip(found, stored)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(stored, float) and not isinstance(found, bool):
        tolerance = 1e-3 if ".box" in where else 1e-4
        assert found == pytest.approx(stored, abs=tolerance), where
    else:
        assert found == stored, where
