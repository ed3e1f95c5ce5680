"""Shared fixtures: small phantom datasets built by the library's own generator."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def quick_dataset(tmp_path_factory) -> Path:
    from drustage.synth.writer import generate_dataset, get_preset

    out = tmp_path_factory.mktemp("quick")
    generate_dataset(out, get_preset("quick"), workers=1, progress=False, preset="quick")
    return out


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/data/real is absent")
    return REAL_DATA


@pytest.fixture
def real_folder_or_none() -> Path | None:
    return REAL_DATA if REAL_DATA.is_dir() else None
