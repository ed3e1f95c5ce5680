"""Folder-backed labelling: radiographs in a folder, labels saved in the project's dataset layout.

A folder that already is a drustage dataset keeps its ``labels.csv``; a plain folder of
radiographs gets one on the first save. Every save re-reads ``labels.csv`` under a lock (a
thread lock within the server, an ``flock`` across processes), changes one row and writes the
file atomically, so two tabs saving different images never lose either's work.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from drustage.data.labels import list_images
from drustage.data.layout import (
    LABELS_FILE,
    MANIFEST_FILE,
    Box,
    DatasetError,
    Record,
    checked_box,
    read_dataset,
    write_labels,
    write_manifest,
)
from drustage.imaging import RadiographError, image_size
from drustage.stages import BONES, parse_stage

LOCK_FILE = ".labels.lock"
log = logging.getLogger(__name__)


def is_complete(record: Record) -> bool:
    """Labelled for training: both stages and both boxes."""
    return all(bone in record.stages and bone in record.boxes for bone in BONES)


def _folder_records(root: Path) -> list[Record]:
    records, seen = [], set()
    for path in list_images(root):
        relative = path.relative_to(root).as_posix()
        image_id = Path(relative).with_suffix("").as_posix().replace("/", "_")
        while image_id in seen:
            image_id += "_"
        seen.add(image_id)
        records.append(Record(image_id, relative))
    return records


class LabelStore:
    """The records of one labelling folder, keyed by image id (the only way requests name files)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise DatasetError(f"{root}: labelling folder not found")
        self._lock = threading.Lock()
        self.records: dict[str, Record] = {r.image_id: r for r in self._read()}

    def _read(self) -> list[Record]:
        """The folder's records: ``labels.csv`` rows (a malformed row is reported and its image
        offered again unlabelled, never fatal), then any image no row names."""
        folder = _folder_records(self.root)
        if not (self.root / LABELS_FILE).is_file():
            return folder
        problems: list[str] = []
        try:
            records = list(read_dataset(self.root, problems).records)
        except DatasetError as error:  # no usable row at all
            problems.append(str(error))
            records = []
        for problem in problems:
            log.warning("labelling: skipped %s", problem)
        named, ids = {r.file for r in records}, {r.image_id for r in records}
        return records + [r for r in folder if r.file not in named and r.image_id not in ids]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, open(self.root / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ids(self) -> list[str]:
        return list(self.records)

    def path_of(self, image_id: str) -> Path:
        return self.root / self.records[image_id].file

    def next_unlabelled(self, after: str | None = None) -> str | None:
        """The first incomplete record after ``after`` (wrapping round), or None when all are done."""
        ids = self.ids()
        start = ids.index(after) + 1 if after in self.records else 0
        for image_id in ids[start:] + ids[:start]:
            if image_id != after and not is_complete(self.records[image_id]):
                return image_id
        return None

    def save(self, image_id: str, stages: dict[str, str | None], boxes: dict[str, Box | None],
             laterality: str | None) -> Record:
        """Replace one record's stages, boxes and side; returns the saved record.

        Raises ``KeyError`` for an unknown id and ``ValueError`` naming a bad stage or box.
        """
        if image_id not in self.records:
            raise KeyError(image_id)
        if set(stages) - set(BONES) or set(boxes) - set(BONES):
            raise ValueError(f"bones must be among {', '.join(BONES)}")
        parsed_stages = {bone: parse_stage(code, bone) for bone, code in stages.items() if code}
        height = width = None
        if any(b is not None for b in boxes.values()):
            try:
                height, width = image_size(self.path_of(image_id))
            except RadiographError as error:  # the problem only: the folder's path stays on the server
                raise ValueError(f"image {image_id} cannot be read: {error.problem}") from None
        parsed_boxes = {bone: checked_box(box, width, height, f"{bone} box") for bone, box in boxes.items()
                        if box is not None}
        if laterality not in (None, "L", "R"):
            raise ValueError(f"laterality must be L, R or empty, got {laterality!r}")
        with self._locked():
            # Re-read so a save from another tab or process since our last read is kept.
            current = {r.image_id: r for r in self._read()}
            for other_id, record in self.records.items():
                current.setdefault(other_id, record)
            updated = replace(current[image_id], stages=parsed_stages, boxes=parsed_boxes, laterality=laterality)
            current[image_id] = updated
            if not (self.root / MANIFEST_FILE).is_file():
                write_manifest(self.root, source="drustage serve labelling")
            write_labels(self.root, list(current.values()))
            self.records = current
        return updated
