"""A dataset's radius and ulna crops as the detector (or the dataset's own boxes) frames them."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import replace
from pathlib import Path

from drustage.data.crops import crop_region, needs_mirror
from drustage.data.detection import box_iou
from drustage.data.laterality import hand_side
from drustage.data.layout import Dataset, write_labels, write_manifest
from drustage.imaging import RadiographError, load_radiograph, to_uint8
from drustage.inference.detector import Detector
from drustage.io_utils import atomic_write_text, save_png
from drustage.stages import BONES
from drustage.thresholds import DETECTION_THRESHOLD

__all__ = ["write_crops"]


def write_crops(dataset: Dataset, out: str | Path, detector: str | Path | None = None,
                threshold: float = DETECTION_THRESHOLD, progress: bool = True) -> str:
    """A new dataset in ``out`` over the same images whose boxes come from ``detector`` (or the
    dataset's own boxes), plus the 128x96 crops as PNG and ``crops.csv``. Classifiers trained on
    it see what the detector really produces; with a detector, the manifest's ``stray_boxes`` holds
    each film's stray candidates (off-bone crops for ``ClassifierConfig.off_bone_strays``)."""
    from tqdm import tqdm

    out = Path(out)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    find = Detector.from_checkpoint(detector, threshold) if detector else None
    records, rows, problems, strays = [], [], [], {}
    for record in tqdm(dataset.records, desc="crops", unit="img", disable=not progress):
        try:
            image = load_radiograph(dataset.path_of(record)).image
        except RadiographError as error:
            problems.append(str(error))
            continue
        if find is None:
            boxes = dict(record.boxes)
            scores = {bone: 1.0 for bone in boxes}
        else:
            found, film_strays = find.detect(image)
            if film_strays:
                strays[record.image_id] = film_strays
            boxes = {bone: d.box for bone, d in found.items() if d.box is not None}
            scores = {bone: d.score for bone, d in found.items()}
            problems += [f"{record.file}: {bone} not found (best score {found[bone].score:.2f})"
                         for bone in BONES if bone not in boxes]
        # the sheet's side, else the side the boxes give (as the predictor finds it): the crops are
        # mirrored as they will be when read
        laterality = record.laterality or hand_side(image, boxes)[0]
        for bone, box in boxes.items():
            name = f"crops/{bone}/{record.image_id}.png"
            save_png(out / name, to_uint8(crop_region(image, box, needs_mirror(laterality))))
            truth = record.boxes.get(bone)
            rows.append({"image_id": record.image_id, "bone": bone, "file": name,
                         "stage": record.stages[bone].code if bone in record.stages else "",
                         "score": f"{scores[bone]:.4f}",
                         "iou_to_label": f"{box_iou(box, truth):.4f}" if truth else ""})
        relative = os.path.relpath(dataset.path_of(record), out)
        records.append(replace(record, file=relative, boxes=boxes, laterality=laterality))
    write_labels(out, records)
    write_manifest(out, source="drustage crop", boxes="detector" if detector else "labels",
                   dataset=dataset.root.name, **({"stray_boxes": strays} if detector else {}))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image_id", "bone", "file", "stage", "score", "iou_to_label"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "crops.csv", buffer.getvalue())
    lines = [f"wrote {len(rows)} crops of {len(records)} radiographs to {out}"] + problems
    return "\n".join(lines)
