"""The one on-disk dataset layout that every drustage command reads and writes.

::

    DATASET/
      dataset.json     {"format": "drustage-dataset", "version": 1, ...provenance...}
      labels.csv       one row per radiograph (columns below)
      images/          the radiographs (PNG, 16-bit by default; TIFF, JPEG or DICOM also fine)

``labels.csv`` columns: ``image_id, file`` (relative to DATASET), ``laterality`` (L/R/blank),
``sex`` (F/M/blank), ``age_years``, ``radius_stage`` (R1..R11 or blank), ``ulna_stage``
(U1..U9 or blank), and the boxes ``radius_x1, radius_y1, radius_x2, radius_y2, ulna_x1, ...``
in pixels of the original image, ``[x1, y1, x2, y2]`` (blank when not annotated).
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from dataclasses import dataclass, field, replace
from pathlib import Path

from drustage.io_utils import atomic_write_text, printable, read_json
from drustage.stages import BONES, Bone, Stage, parse_stage

FORMAT_NAME = "drustage-dataset"
FORMAT_VERSION = 1
LABELS_FILE = "labels.csv"
MANIFEST_FILE = "dataset.json"
BOX_FIELDS = tuple(f"{bone}_{c}" for bone in BONES for c in ("x1", "y1", "x2", "y2"))
COLUMNS = ("image_id", "file", "laterality", "sex", "age_years", "radius_stage", "ulna_stage") + BOX_FIELDS

Box = tuple[float, float, float, float]


class DatasetError(ValueError):
    """A dataset on disk is missing or malformed; the message names the file and the problem."""


# A box narrower or lower than this (pixels) frames no bone; one reaching further than this share
# of the image beyond its edge is not a box on it (a drawn box may overhang the edge a little).
MIN_BOX_SIDE = 4.0
BOX_OVERHANG = 0.05


def checked_box(box, width: int | None, height: int | None, where: str) -> Box:
    """``box`` as four finite floats ``x1 < x2, y1 < y2`` of at least ``MIN_BOX_SIDE`` pixels, and,
    when the image size is known, on the image (clipped to it). Raises ``DatasetError`` naming
    ``where`` otherwise: a string, a boolean, infinity or a box off the image never goes further."""
    try:
        values = list(box)
    except TypeError:
        raise DatasetError(f"{where}: expected [x1, y1, x2, y2], got {printable(box)!s:.80}") from None
    if len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values):
        raise DatasetError(f"{where}: expected four numbers [x1, y1, x2, y2], got {printable(values)!s:.80}")
    x1, y1, x2, y2 = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise DatasetError(f"{where}: coordinates must be finite numbers")
    if x2 <= x1 or y2 <= y1:
        raise DatasetError(f"{where}: [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has no area (needs x1 < x2 and y1 < y2)")
    if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
        raise DatasetError(f"{where}: [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is under {MIN_BOX_SIDE:g} pixels wide or high")
    if width is not None and height is not None:
        dx, dy = BOX_OVERHANG * width, BOX_OVERHANG * height
        if x1 < -dx or y1 < -dy or x2 > width + dx or y2 > height + dy:
            raise DatasetError(f"{where}: [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width}x{height} image")
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
            raise DatasetError(f"{where}: the box barely touches the {width}x{height} image")
    return (x1, y1, x2, y2)


@dataclass(frozen=True)
class Record:
    """One radiograph of a dataset with whatever labels it has."""

    image_id: str
    file: str
    laterality: str | None = None
    sex: str | None = None
    age_years: float | None = None
    stages: dict[Bone, Stage] = field(default_factory=dict)
    boxes: dict[Bone, Box] = field(default_factory=dict)

    def stage(self, bone: Bone) -> Stage | None:
        return self.stages.get(bone)

    def to_row(self) -> dict[str, str]:
        row = {
            "image_id": self.image_id,
            "file": self.file,
            "laterality": self.laterality or "",
            "sex": self.sex or "",
            "age_years": "" if self.age_years is None else f"{self.age_years:g}",
            "radius_stage": self.stages["radius"].code if "radius" in self.stages else "",
            "ulna_stage": self.stages["ulna"].code if "ulna" in self.stages else "",
        }
        for bone in BONES:
            box = self.boxes.get(bone)
            for name, value in zip(("x1", "y1", "x2", "y2"), box or ("",) * 4):
                row[f"{bone}_{name}"] = value if value == "" else f"{value:.1f}"
        return row


@dataclass(frozen=True)
class Dataset:
    root: Path
    records: tuple[Record, ...]
    manifest: dict

    def path_of(self, record: Record) -> Path:
        return self.root / record.file

    def labelled(self, bone: Bone) -> list[Record]:
        return [r for r in self.records if bone in r.stages]

    def with_records(self, records) -> "Dataset":
        return replace(self, records=tuple(records))


def _optional_float(text: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: not a finite number: {text!r}")
    return value


def _row_to_record(row: dict[str, str], where: str) -> Record:
    image_id = (row.get("image_id") or "").strip()
    file = (row.get("file") or "").strip()
    if not image_id or not file:
        raise DatasetError(f"{where}: image_id and file are required")
    stages: dict[Bone, Stage] = {}
    boxes: dict[Bone, Box] = {}
    for bone in BONES:
        text = (row.get(f"{bone}_stage") or "").strip()
        if text:
            try:
                stages[bone] = parse_stage(text, bone)
            except ValueError as error:
                raise DatasetError(f"{where}: {error}") from None
        coords = [_optional_float(row.get(f"{bone}_{c}") or "", f"{where} {bone}_{c}")
                  for c in ("x1", "y1", "x2", "y2")]
        if all(c is not None for c in coords):
            boxes[bone] = checked_box(coords, None, None, f"{where}: {bone} box")
        elif any(c is not None for c in coords):
            raise DatasetError(f"{where}: {bone} box is incomplete")
    laterality = (row.get("laterality") or "").strip().upper() or None
    if laterality not in (None, "L", "R"):
        raise DatasetError(f"{where}: laterality must be L, R or blank, got {laterality!r}")
    sex = (row.get("sex") or "").strip().upper() or None
    return Record(image_id, file, laterality, sex, _optional_float(row.get("age_years") or "", f"{where} age_years"),
                  stages, boxes)


def read_dataset(root: str | Path, problems: list[str] | None = None) -> Dataset:
    """Read a dataset directory; raises ``DatasetError`` naming the file and problem. With a
    ``problems`` list, a malformed row is skipped and its one-line reason appended instead
    (a labelling folder with one bad row stays usable)."""
    root = Path(root)
    labels = root / LABELS_FILE
    if not root.is_dir():
        raise DatasetError(f"{root}: not a dataset directory (no such directory)")
    if not labels.is_file():
        raise DatasetError(f"{root}: not a drustage dataset (no {LABELS_FILE})")
    manifest = {}
    manifest_path = root / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = read_json(manifest_path, DatasetError)
    with open(labels, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image_id", "file"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{labels}: missing column(s) {', '.join(sorted(missing))}")
        records = []
        for i, row in enumerate(reader):
            try:
                records.append(_row_to_record(row, f"{labels} line {i + 2}"))
            except DatasetError as error:
                if problems is None:
                    raise
                problems.append(str(error))
    if not records:
        raise DatasetError(f"{labels}: no radiographs listed")
    seen: set[str] = set()
    for record in records:
        if record.image_id in seen:
            raise DatasetError(f"{labels}: duplicate image_id {record.image_id!r}")
        seen.add(record.image_id)
    return Dataset(root, tuple(records), manifest)


def write_labels(root: str | Path, records: list[Record] | tuple[Record, ...]) -> Path:
    """Write ``labels.csv`` atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record.to_row())
    path = Path(root) / LABELS_FILE
    atomic_write_text(path, buffer.getvalue())
    return path


def write_manifest(root: str | Path, **provenance) -> Path:
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **provenance}
    path = Path(root) / MANIFEST_FILE
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
