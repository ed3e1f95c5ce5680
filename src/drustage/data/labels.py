"""Label spreadsheets (CSV, XLSX, legacy XLS) matched to image files by a key the user names.

Hospital exports rarely carry file names: the paper's labels sat in an ``.xls`` sheet and were
matched to images by date and serial number. A key is one or more columns; a row's key and an
image file's stem are both split into tokens and normalised (dates to ``YYYYMMDD``, numbers
without leading zeros, case folded), so ``2017-03-12`` + ``45`` matches ``20170312_0045.png``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from drustage.data.layout import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
_TOKEN_SPLIT = re.compile(r"[^0-9A-Za-z]+")
_ISO_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T].*)?$")


def read_label_sheet(path: str | Path, sheet: str | int | None = None):
    """Read a CSV, XLSX or XLS label sheet into a pandas DataFrame of strings and dates."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: label sheet not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in (".xlsx", ".xlsm", ".xls"):
            # calamine reads both the modern and the legacy (BIFF) Excel formats.
            frame = pd.read_excel(path, sheet_name=sheet or 0, engine="calamine", dtype=object)
        else:
            raise DatasetError(f"{path}: unsupported label sheet type {suffix!r} (use .csv, .xlsx or .xls)")
    except DatasetError:
        raise
    except Exception as error:  # pandas/openpyxl/xlrd raise many types for a bad file
        raise DatasetError(f"{path}: cannot read label sheet ({type(error).__name__}: {error})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DatasetError(f"{path}: label sheet has no rows")
    return frame.fillna("")


def normalise_token(value: object) -> str:
    """One key part in canonical form: dates as YYYYMMDD, integers without leading zeros."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.strftime("%Y%m%d")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    match = _ISO_DATE.match(text)
    if match:
        year, month, day = (int(g) for g in match.groups())
        return f"{year:04d}{month:02d}{day:02d}"
    if text.isdigit():
        return str(int(text))
    return text.lower()


def key_tokens(values: list[object]) -> tuple[str, ...]:
    """Split and normalise key values into tokens (a file name loses its extension)."""
    tokens: list[str] = []
    for value in values:
        if isinstance(value, (dt.datetime, dt.date, int, float)):
            tokens.append(normalise_token(value))
            continue
        text = str(value).strip()
        if Path(text).suffix.lower() in IMAGE_SUFFIXES:
            text = text[: -len(Path(text).suffix)]
        if _ISO_DATE.match(text):
            tokens.append(normalise_token(text))
            continue
        tokens.extend(normalise_token(part) for part in _TOKEN_SPLIT.split(text) if part)
    return tuple(tokens)


@dataclass(frozen=True)
class LabelMatch:
    matched: list[tuple[Path, dict]]  # (image file, row as a dict)
    unmatched_rows: list[int]  # spreadsheet row numbers (1 = header, data from 2)
    unlabelled_files: list[Path]
    duplicate_keys: list[tuple[str, ...]]


def is_image_file(path: Path) -> bool:
    """Images by suffix; files without a suffix (DICOM exports often have none) by content."""
    from drustage.imaging import is_dicom

    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return path.suffix == "" and is_dicom(path)


def list_images(folder: str | Path) -> list[Path]:
    """Every radiograph below ``folder``, sorted; raises ``DatasetError`` when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not files:
        raise DatasetError(f"{folder}: no image files (.png, .jpg, .tif, .dcm) found")
    return files


def match_labels(frame, images: list[Path], key: list[str]) -> LabelMatch:
    """Match sheet rows to image files on the ``key`` columns.

    A row matches a file when the row's key tokens equal the file stem's tokens; for a single
    key column the tokens may also equal the file's name tokens with the folder stripped.
    """
    missing = [column for column in key if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"key column(s) {', '.join(missing)} not in the sheet; columns are: {', '.join(frame.columns)}"
        )
    by_tokens: dict[tuple[str, ...], list[Path]] = {}
    for image in images:
        by_tokens.setdefault(key_tokens([image.name]), []).append(image)
    matched, unmatched, duplicates = [], [], []
    used: set[Path] = set()
    seen_keys: set[tuple[str, ...]] = set()
    for position, row in enumerate(frame.to_dict("records")):
        tokens = key_tokens([row[column] for column in key])
        if tokens in seen_keys:
            duplicates.append(tokens)
            continue
        seen_keys.add(tokens)
        files = by_tokens.get(tokens, [])
        if len(files) == 1:
            matched.append((files[0], row))
            used.add(files[0])
        else:
            unmatched.append(position + 2)
    unlabelled = [image for image in images if image not in used]
    return LabelMatch(matched, unmatched, unlabelled, duplicates)
