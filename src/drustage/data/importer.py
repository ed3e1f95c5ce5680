"""Build a drustage dataset from a hospital's image folder, label sheet and box annotations."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from drustage.data.aged_films import AGE_COLUMNS, age_in_years
from drustage.data.annotations import read_boxes
from drustage.data.labels import list_images, match_labels, read_label_sheet
from drustage.data.layout import DatasetError, Record, checked_box, write_labels, write_manifest
from drustage.imaging import RadiographError, image_size
from drustage.io_utils import printable
from drustage.stages import BONES, parse_stage


@dataclass
class ImportReport:
    out: Path
    records: int
    unmatched_rows: list[int] = field(default_factory=list)
    unlabelled_files: list[str] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    boxes_without_image: list[str] = field(default_factory=list)
    unreadable_files: list[str] = field(default_factory=list)  # one line each, not imported
    bad_boxes: list[str] = field(default_factory=list)  # one line each, the box left out

    @property
    def failed(self) -> bool:
        return bool(self.unreadable_files or self.bad_boxes)

    def summary(self) -> str:
        lines = [f"wrote {self.records} radiographs to {self.out}"]
        if self.unmatched_rows:
            lines.append(f"{len(self.unmatched_rows)} sheet row(s) matched no image: "
                         f"rows {_brief(self.unmatched_rows)}")
        if self.unlabelled_files:
            lines.append(f"{len(self.unlabelled_files)} image(s) have no label row: {_brief(self.unlabelled_files)}")
        if self.duplicate_keys:
            lines.append(f"{len(self.duplicate_keys)} duplicate key(s) skipped: {_brief(self.duplicate_keys)}")
        if self.boxes_without_image:
            lines.append(f"{len(self.boxes_without_image)} box entries name no image: "
                         f"{_brief(self.boxes_without_image)}")
        lines += [f"not imported: {line}" for line in self.unreadable_files]
        lines += [f"box left out: {line}" for line in self.bad_boxes]
        return "\n".join(lines)


def _brief(items: list, limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" ... (+{len(items) - limit})" if len(items) > limit else "")


def _stage_or_blank(row: dict, column: str, bone, where: str):
    value = row.get(column, "")
    if value is None or str(value).strip() == "":
        return None
    try:
        return parse_stage(value, bone)
    except ValueError as error:
        raise DatasetError(f"{where}: {error}") from None


def _age_or_blank(row: dict, column: str | None, where: str) -> float | None:
    """The row's age in years from ``column`` (one of ``AGE_COLUMNS``, in its unit), or None."""
    value = None if column is None else row.get(column)
    if value is None or str(value).strip() == "":
        return None
    try:
        return round(age_in_years(value, column), 4)
    except ValueError as error:
        raise DatasetError(f"{where}: {error}") from None


def _row_labels(row: dict, radius_column: str, ulna_column: str, age_column: str | None, where: str
                ) -> tuple[dict, float | None]:
    """A sheet row's stages (by bone, blank cells left out) and age in years."""
    stages = {}
    for bone, column in zip(BONES, (radius_column, ulna_column)):
        stage = _stage_or_blank(row, column, bone, where)
        if stage is not None:
            stages[bone] = stage
    return stages, _age_or_blank(row, age_column, where)


def import_dataset(images: Path, out: Path, labels: Path | None = None, key: list[str] | None = None,
                   radius_column: str = "radius_stage", ulna_column: str = "ulna_stage",
                   boxes: Path | None = None, link: bool = False) -> ImportReport:
    """Copy images into ``out/images`` (or, with ``link``, point symbolic links at them, so a
    large archive or a folder that must not be copied stays where it is) and write ``labels.csv``
    from the sheet and boxes. The sheet's stage columns, ``sex``, ``laterality`` and an age
    (``age_years``, ``bone_age_years``, ``age_months`` or ``boneage_months``) are read; a sheet with
    an age needs no stage columns (films for ``train-classifier --aged``)."""
    files = list_images(images)
    rows: dict[Path, dict] = {}
    age_column = None
    report = ImportReport(out=out, records=0)
    if labels is not None:
        if not key:
            raise DatasetError(f"{labels}: --key is required to match sheet rows to images")
        frame = read_label_sheet(labels)
        # a sheet of ages (films with a bone age but no stages, for weak supervision) needs no stage columns
        age_column = next((c for c in AGE_COLUMNS if c in frame.columns), None)
        for column in (radius_column, ulna_column):
            if column not in frame.columns and age_column is None:
                raise DatasetError(f"{labels}: no column {column!r} (nor an age column: {', '.join(AGE_COLUMNS)}); "
                                   f"columns are: {', '.join(frame.columns)}")
        match = match_labels(frame, files, key)
        rows = dict(match.matched)
        report.unmatched_rows = match.unmatched_rows
        report.unlabelled_files = [str(p.relative_to(images)) for p in match.unlabelled_files]
        report.duplicate_keys = ["_".join(k) for k in match.duplicate_keys]
    # every row's stages and age, read before anything is written: a bad cell stops the import
    # with nothing copied
    labelled = {path: _row_labels(row, radius_column, ulna_column, age_column, f"{labels} ({path.name})")
                for path, row in rows.items()}
    box_table = read_boxes(boxes) if boxes is not None else {}
    names = {p.name for p in files}
    report.boxes_without_image = sorted(n for n in box_table if n not in names)

    records = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(files):
        try:
            height, width = image_size(path)
        except RadiographError as error:
            report.unreadable_files.append(str(error))
            continue
        checked = {}
        for bone, box in box_table.get(path.name, {}).items():
            try:
                checked[bone] = checked_box(box, width, height, f"{printable(path.name)}: {bone} box")
            except DatasetError as error:
                report.bad_boxes.append(str(error))
        row = rows.get(path, {})
        stages, age = labelled.get(path, ({}, None))
        image_id = f"{index:05d}-{path.stem}"
        relative = f"images/{image_id}{path.suffix.lower()}"
        target = out / relative
        if link:
            target.unlink(missing_ok=True)
            os.symlink(path.resolve(), target)
        else:
            shutil.copy2(path, target)
        laterality = str(row.get("laterality", "")).strip().upper() or None
        records.append(Record(
            image_id=image_id, file=relative,
            laterality=laterality if laterality in ("L", "R") else None,
            sex=str(row.get("sex", "")).strip().upper() or None,
            age_years=age, stages=stages, boxes=checked,
        ))
    write_labels(out, records)
    write_manifest(out, source="drustage import", images=str(images.name),
                   labels=labels.name if labels else None, key=key)
    report.records = len(records)
    return report
