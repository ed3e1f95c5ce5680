"""Real films with a known age and sex: reading age sheets, and the seeded split of the shared films.

An age sheet is any CSV/XLSX/XLS with a file column (``file``, ``filename`` or ``image``), an age
(``age_years``, ``bone_age_years``, ``age_months`` or ``boneage_months``) and a sex (``sex`` as
F/M, or ``male`` as true/false). Matching is by file name. The shared RSNA folders' ``labels.csv``
are such sheets.

The shared films with a bone age are split once (seeded, stratified by sex and two-year age band)
into train / validation / test; the split is written down in ``annotations/real/maturity_split.csv``
and the test part is used only for final figures.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drustage.data.layout import DatasetError
from drustage.growth import check_sex

FILE_COLUMNS = ("file", "filename", "image")
AGE_COLUMNS = {"age_years": 1.0, "bone_age_years": 1.0, "age_months": 1 / 12, "boneage_months": 1 / 12}
# The shared folders whose films carry a bone age (the others have none, or a chronological age only).
AGED_FOLDERS = ("rsna-halfres", "rsna-halfres-extra", "rsna-fullres")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"validation": 0.15, "test": 0.25}
SPLIT_SEED = 0


@dataclass(frozen=True)
class AgedFilm:
    key: str  # how the film is named: relative to the real folder, or the sheet's file cell
    path: Path
    sex: str | None
    age_years: float


def _pick(columns: list[str], names, what: str, sheet: Path) -> str:
    for name in names:
        if name in columns:
            return name
    raise DatasetError(f"{sheet}: no {what} column (expected one of {', '.join(names)}); "
                       f"columns are: {', '.join(columns)}")


def _sex_of(row: dict, column: str | None) -> str | None:
    if column is None:
        return None
    value = str(row[column]).strip()
    if column == "male":
        return {"true": "M", "1": "M", "false": "F", "0": "F"}.get(value.lower()) or check_sex(value)
    return check_sex({"female": "F", "male": "M"}.get(value.lower(), value))


def age_in_years(value, column: str) -> float:
    """An age cell of ``column`` (one of ``AGE_COLUMNS``, in its unit) in years; ValueError unless
    it is a number between 0 and 30 years."""
    try:
        age = float(str(value).strip()) * AGE_COLUMNS[column]
    except ValueError:
        age = math.nan
    if not (math.isfinite(age) and 0 <= age <= 30):
        raise ValueError(f"{column} {value!r} is not an age: not between 0 and 30 years")
    return age


def read_age_sheet(sheet: str | Path, images_root: str | Path | None = None) -> tuple[list[AgedFilm], list[str]]:
    """Films of an age sheet, and one line per row that could not be used (the rest go on).

    File cells are relative to ``images_root`` (default: the sheet's folder)."""
    from drustage.data.labels import read_label_sheet

    sheet = Path(sheet)
    root = Path(images_root) if images_root is not None else sheet.parent
    frame = read_label_sheet(sheet)
    columns = list(frame.columns)
    file_column = _pick(columns, FILE_COLUMNS, "file", sheet)
    age_column = _pick(columns, tuple(AGE_COLUMNS), "age", sheet)
    sex_column = next((c for c in ("sex", "male") if c in columns), None)
    films, problems = [], []
    for line, row in enumerate(frame.to_dict("records"), start=2):
        where = f"{sheet} line {line}"
        name = str(row[file_column]).strip()
        try:
            if not name:
                raise ValueError("no file named")
            films.append(AgedFilm(name, root / name, _sex_of(row, sex_column),
                                  age_in_years(row[age_column], age_column)))
        except ValueError as error:
            problems.append(f"{where}: {error}")
    return films, problems


def shared_aged_films(real: str | Path) -> list[AgedFilm]:
    """The shared real films with a bone age (keys relative to ``real``, like annotations/real)."""
    real = Path(real)
    films = []
    for folder in AGED_FOLDERS:
        sheet = real / folder / "labels.csv"
        if not sheet.is_file():
            continue
        found, problems = read_age_sheet(sheet)
        if problems:
            raise DatasetError(problems[0])
        films += [AgedFilm(f"{folder}/{f.key}", f.path, f.sex, f.age_years) for f in found]
    return sorted(films, key=lambda f: f.key)


def split_films(films: list[AgedFilm], seed: int = SPLIT_SEED,
                fractions: dict[str, float] = SPLIT_FRACTIONS) -> dict[str, str]:
    """``{key: split}``: within each sex and two-year age band, a seeded share goes to test and
    to validation, the rest to train. Shares are rounded on the running totals, so small strata
    (and small sites) still get their share overall. Depends only on the films' keys, sexes and ages."""
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[str]] = {}
    for film in sorted(films, key=lambda f: f.key):
        strata.setdefault((film.sex or "", int(film.age_years // 2)), []).append(film.key)
    assignment: dict[str, str] = {}
    seen = taken_test = taken_val = 0
    for stratum in sorted(strata):
        keys = strata[stratum]
        order = [keys[i] for i in rng.permutation(len(keys))]
        seen += len(order)
        n_test = int(round(fractions["test"] * seen)) - taken_test
        n_val = int(round(fractions["validation"] * seen)) - taken_val
        taken_test, taken_val = taken_test + n_test, taken_val + n_val
        for i, key in enumerate(order):
            assignment[key] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return assignment


def write_split(path: str | Path, assignment: dict[str, str]) -> None:
    from drustage.io_utils import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "split"])
    for key in sorted(assignment):
        writer.writerow([key, assignment[key]])
    atomic_write_text(Path(path), buffer.getvalue())


def read_split(path: str | Path) -> dict[str, str]:
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    bad = [r for r in rows if r.get("split") not in SPLITS or not r.get("file")]
    if bad:
        raise DatasetError(f"{path}: {len(bad)} row(s) without a file or with a split other than "
                           f"{', '.join(SPLITS)}")
    return {r["file"]: r["split"] for r in rows}


def default_split_file() -> Path:
    """``annotations/real/maturity_split.csv`` of a source checkout."""
    return Path(__file__).resolve().parents[3] / "annotations" / "real" / "maturity_split.csv"
