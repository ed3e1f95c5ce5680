"""predict --engine ray: the local path's answers from Ray Data actors; a rerun resumes."""

from __future__ import annotations

import json

import pytest

from answers import assert_same
from drustage.cli import main

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'drustage[ray]')")


@pytest.fixture
def films(trained):
    root, _ = trained  # distinct names, so each keeps its stem as its output name
    return sorted((root / "young/images").glob("*.png"))[:2] + sorted((root / "old/images").glob("*.png"))[2:4]


@pytest.mark.slow
def test_ray_gives_the_local_answers_and_resumes(trained, films, tmp_path):
    import pandas as pd

    args = ["--model", str(trained[1]), "--threshold", "0", "--quiet"]
    assert main(["predict", *map(str, films), "--out", str(tmp_path / "local"), *args]) == 0
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "ray"
    manifest = tmp_path / "manifest.csv"  # how an archive lists a run: one path a row
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in [*films, bad]))
    assert main(["predict", str(manifest), "--out", str(out), "--engine", "ray", "--workers", "2",
                 *args]) == 1  # the bad file fails alone
    for film in films:
        local = json.loads((tmp_path / "local" / f"{film.stem}.json").read_text())
        assert_same(json.loads((out / f"{film.stem}.json").read_text()), local, film.stem)
    summary = pd.read_parquet(out / "summary.parquet")
    assert list(summary.source) == [f.name for f in films]
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), pd.read_csv(tmp_path / "local" / "summary.csv"),
                                  check_exact=False, atol=1e-3)
    # resume: finished items are not read again, the missing one is
    (out / f"{films[0].stem}.json").unlink()
    before = {f.stem: (out / f"{f.stem}.json").stat().st_mtime_ns for f in films[1:]}
    assert main(["predict", *map(str, films), "--out", str(out), "--engine", "ray", "--workers", "1", *args]) == 0
    assert {f.stem: (out / f"{f.stem}.json").stat().st_mtime_ns for f in films[1:]} == before
    assert (out / f"{films[0].stem}.json").is_file()
