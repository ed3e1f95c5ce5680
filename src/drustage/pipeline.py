"""Predictor: radiograph -> detect radius and ulna -> crop -> classify -> StageReport.

Low confidence, a missing bone or a failed side inference is flagged for human review rather
than guessed. Reports carry no DICOM header content beyond geometry.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from drustage.bundle import Bundle
from drustage.data.crops import crop_region, needs_mirror
from drustage.imaging import Radiograph
from drustage.stages import BONES, bracing_guidance

REPORT_VERSION = 1


@dataclass
class BoneResult:
    bone: str
    found: bool
    box: list[float] | None  # [x1, y1, x2, y2], original pixels
    detection_score: float | None  # None when the box was given, not detected
    box_source: str  # "detector" or "given"
    scheme: str
    probabilities: dict[str, float] = field(default_factory=dict)
    prediction: str | None = None  # class name under the scheme (a stage or a phase)
    phase: str | None = None
    confidence: float | None = None


@dataclass
class StageReport:
    source: str
    input_sha256: str
    image_size: list[int]  # [height, width]
    laterality: str | None
    laterality_source: str  # "metadata", "boxes" or "unknown"
    radius: BoneResult
    ulna: BoneResult
    guidance: dict | None
    needs_review: bool
    review_reasons: list[str]
    model_fingerprint: str
    report_version: int = REPORT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def infer_laterality(boxes: dict[str, list[float] | None]) -> str | None:
    """Side of a postero-anterior hand view from the boxes: on a left hand the radius (thumb
    side) lies to the right of the ulna in the image."""
    radius, ulna = boxes.get("radius"), boxes.get("ulna")
    if radius is None or ulna is None:
        return None
    return "L" if (radius[0] + radius[2]) > (ulna[0] + ulna[2]) else "R"


class Predictor:
    """Loads a bundle once and reuses it for every radiograph."""

    def __init__(self, bundle: Bundle, detection_threshold: float = 0.5, min_confidence: float = 0.6):
        from drustage.training.classifier import load_classifier
        from drustage.training.detector import Detector

        self.bundle = bundle
        self.detector = Detector(bundle.path("detector"), detection_threshold)
        self.classifiers = {}
        self.schemes = {}
        for bone in BONES:
            model, payload = load_classifier(bundle.path(bone))
            self.classifiers[bone] = model.to(memory_format=torch.channels_last)
            self.schemes[bone] = payload["scheme_object"]
        self.min_confidence = min_confidence

    def torch_classifier(self, bone: str) -> torch.nn.Module:
        """The PyTorch model of a bone's classifier (Grad-CAM needs its gradients)."""
        return self.classifiers[bone]

    def crops(self, image: np.ndarray, boxes: dict[str, list[float]], laterality: str | None) -> dict[str, np.ndarray]:
        return {bone: crop_region(image, tuple(box), needs_mirror(laterality)) for bone, box in boxes.items()}

    def classify(self, crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class probabilities per bone; each bone's crop runs through its own classifier."""
        result = {}
        with torch.inference_mode():
            for bone, crop in crops.items():
                tensor = torch.from_numpy(crop)[None, None].contiguous(memory_format=torch.channels_last)
                result[bone] = self.classifiers[bone](tensor).softmax(1)[0].numpy()
        return result

    def predict(self, radiograph: Radiograph, input_sha256: str = "",
                boxes: dict[str, tuple[float, float, float, float]] | None = None) -> StageReport:
        """Detect (or take the ``boxes`` given, e.g. drawn by a reader), crop, classify, advise."""
        image = radiograph.image
        detections = self.detector(image) if boxes is None else {}
        if boxes is None:
            boxes = {bone: list(d.box) for bone, d in detections.items() if d.box is not None}
        else:
            boxes = {bone: list(box) for bone, box in boxes.items()}
        reasons: list[str] = []
        laterality, laterality_source = radiograph.meta.laterality, "metadata"
        if laterality is None:
            laterality = infer_laterality(boxes)
            laterality_source = "boxes" if laterality else "unknown"
        if laterality is None:
            reasons.append("hand side unknown: crops not mirrored")
        probabilities = self.classify(self.crops(image, boxes, laterality))
        results = {}
        for bone in BONES:
            scheme = self.schemes[bone]
            detection = detections.get(bone)
            result = BoneResult(bone, bone in boxes, boxes.get(bone),
                                None if detection is None else round(detection.score, 4),
                                "detector" if detections else "given", scheme.name)
            if bone not in boxes:
                reasons.append(f"{bone} not found" + (f" (best detection score {detection.score:.2f})"
                                                      if detection is not None else " (no box given)"))
            else:
                p = probabilities[bone]
                best = int(p.argmax())
                result.probabilities = {name: round(float(v), 4) for name, v in zip(scheme.classes, p)}
                result.prediction = scheme.classes[best]
                result.phase = scheme.phase_of_class(best)
                result.confidence = round(float(p[best]), 4)
                if result.confidence < self.min_confidence:
                    reasons.append(f"{bone} classification confidence {result.confidence:.2f} is below "
                                   f"{self.min_confidence:.2f}")
            results[bone] = result
        guidance = None
        if results["radius"].phase and results["ulna"].phase:
            guidance = bracing_guidance(_stage_or_phase(results["radius"]), _stage_or_phase(results["ulna"])).to_dict()
        height, width = image.shape
        return StageReport(
            source=radiograph.meta.source, input_sha256=input_sha256, image_size=[height, width],
            laterality=laterality, laterality_source=laterality_source, radius=results["radius"],
            ulna=results["ulna"], guidance=guidance, needs_review=bool(reasons), review_reasons=reasons,
            model_fingerprint=self.bundle.fingerprint,
        )


RUNTIMES = ("torch",)


def make_predictor(bundle: Bundle, runtime: str = "torch", detection_threshold: float = 0.5) -> Predictor:
    """A predictor running the bundle's models on ``runtime``."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    return Predictor(bundle, detection_threshold)


def _stage_or_phase(result: BoneResult) -> str:
    """A fine-scheme prediction is a stage code (R7); otherwise the phase."""
    return result.prediction if result.scheme == "stage" else result.phase


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders (a DICOM series, an export) expand to the images inside them."""
    from drustage.data.labels import list_images

    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(list_images(path) if path.is_dir() else [path])
    return files


def predict_files(predictor: Predictor, paths: list[Path], out: str | Path, gradcam: bool = False,
                  progress: bool = True, boxes: dict | None = None) -> tuple[list[dict], list[str]]:
    """Per radiograph ``<stem>.json`` and ``<stem>.overlay.png`` in ``out``, and ``summary.csv``.

    ``boxes`` (``{file name: {bone: box}}``, from ``read_boxes``) replaces detection for the
    files it names. Bad files are reported and skipped; returns (reports, one-line failures).
    """
    import csv
    import io
    import json

    from tqdm import tqdm

    from drustage.gradcam import grad_cam
    from drustage.imaging import load_radiograph
    from drustage.io_utils import atomic_path, atomic_write_text
    from drustage.viz import render_overlay

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports, failures, used = [], [], set()
    for path in tqdm(paths, desc="predict", unit="img", disable=not progress or len(paths) < 2):
        try:
            radiograph = load_radiograph(path)
            given = None if boxes is None else boxes.get(path.name)
            if boxes is not None and given is None:
                raise ValueError(f"{path}: no boxes given for this file")
            report = predictor.predict(radiograph, file_sha256(path), given).to_dict()
        except ValueError as error:
            failures.append(str(error))
            continue
        stem = path.stem
        while stem in used:  # two inputs with one name in different folders
            stem += "_"
        used.add(stem)
        used_boxes = {b: report[b]["box"] for b in BONES if report[b]["box"] is not None}
        crops = predictor.crops(radiograph.image, used_boxes, report["laterality"])
        heatmaps = None
        if gradcam:
            heatmaps = {bone: grad_cam(predictor.classifiers[bone], crop) for bone, crop in crops.items()}
        report["files"] = {"json": f"{stem}.json", "overlay": f"{stem}.overlay.png"}
        atomic_write_text(out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
        with atomic_path(out / f"{stem}.overlay.png") as tmp:
            render_overlay(radiograph.image, report, crops, heatmaps).save(tmp, format="PNG")
        reports.append(report)
    columns = ["source", "radius_prediction", "radius_phase", "radius_confidence", "ulna_prediction", "ulna_phase",
               "ulna_confidence", "guidance", "needs_review", "review_reasons"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for report in reports:
        writer.writerow({
            "source": report["source"],
            **{f"{b}_{k}": report[b][k] for b in BONES for k in ("prediction", "phase", "confidence")},
            "guidance": (report["guidance"] or {}).get("rule", ""),
            "needs_review": report["needs_review"], "review_reasons": "; ".join(report["review_reasons"]),
        })
    atomic_write_text(out / "summary.csv", buffer.getvalue())
    return reports, failures
