"""Predictor: radiograph -> detect radius and ulna -> crop -> classify -> StageReport.

A missing bone, a box the detector is unsure of, low classification confidence, a failed side
inference, a reading implausible for the patient's age and sex (when given) or radius and ulna
readings further apart than the growth table allows are flagged for human review rather than
guessed; the last two also withhold the bracing guidance. A box whose reading is spread over the
classes more than the bundle's classifier spreads on readable bone (``readability`` in its
manifest, fitted on validation films) shows no readable bone: that reading, and so the guidance,
is withheld and the box flagged; the detector's ulna box is withheld with such a radius box, its
pair. Reports carry no DICOM header content beyond geometry; the
patient's sex and age are used for the checks and never written.

With a ``stage`` scheme the phase is read first (the classes' probabilities summed per phase) and
the stage is the most probable one inside that phase, so stage, phase and guidance always agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from drustage.data.crops import crop_region, needs_mirror
from drustage.data.laterality import hand_side, infer_laterality
from drustage.data.layout import checked_box
from drustage.growth import PatientInfo, discordance, implausible_for_age, mean_age_at
from drustage.imaging import Radiograph
from drustage.inference.bundle import Bundle, check_member
from drustage.inference.classifier import TorchClassifier, class_spread, load_classifier, readability_limit, readable
from drustage.inference.detector import Detector
from drustage.inference.device import DEFAULT_DEVICE, resolve_device
from drustage.stages import BONES, PHASES, ClassScheme, Stage, bracing_guidance, withheld_guidance
from drustage.thresholds import DETECTION_THRESHOLD, MIN_CONFIDENCE, REVIEW_DETECTION_SCORE

__all__ = ["RUNTIMES", "BoneResult", "Predictor", "StageReport", "hand_side", "infer_laterality"]

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
    confidence: float | None = None  # calibrated probability of the prediction
    phase_confidence: float | None = None  # of the phase (its classes' probabilities summed)
    expected_stage: float | None = None  # probability-weighted stage (stage scheme): a maturity score
    # the probabilities' spread over the classes (sd, in classes); past the bundle's readable limit
    # the reading above (prediction to expected_stage) is withheld
    class_spread: float | None = None


@dataclass
class StageReport:
    source: str
    input_sha256: str
    image_size: list[int]  # [height, width]
    laterality: str | None
    laterality_source: str  # "metadata", "boxes", "hand" (one box and the hand beside it) or "unknown"
    radius: BoneResult
    ulna: BoneResult
    guidance: dict | None
    needs_review: bool
    review_reasons: list[str]
    model_fingerprint: str
    report_version: int = REPORT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StageReport:
        """The report a ``to_dict`` (or its JSON) holds."""
        return cls(**{**data, **{bone: BoneResult(**data[bone]) for bone in BONES}})

    def bone(self, name: str) -> BoneResult:
        return self.radius if name == "radius" else self.ulna


RUNTIMES = ("torch", "onnx")


class Predictor:
    """Loads a bundle once and reuses it for every radiograph.

    ``runtime`` "torch" runs the checkpoints; "onnx" runs the networks exported by
    ``drustage export-onnx`` with ONNX Runtime. Both share every step around the networks.
    """

    def __init__(self, bundle: Bundle, detection_threshold: float = DETECTION_THRESHOLD,
                 min_confidence: float = MIN_CONFIDENCE, runtime: str = "torch", threads: int | None = None,
                 review_detection_score: float | None = None, device: str = DEFAULT_DEVICE):
        from drustage.stages import scheme_from_dict

        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        # ONNX Runtime runs here on the CPU: "auto" means the CPU for it, anything else is refused
        if runtime == "onnx" and device not in ("auto", "cpu"):
            raise ValueError(f"device {device!r}: the onnx runtime runs on the CPU here; use --runtime torch")
        resolved = torch.device("cpu") if runtime == "onnx" else resolve_device(device)
        self.bundle = bundle
        self.runtime = runtime
        if runtime == "onnx":
            from drustage.inference.onnx import load_onnx_models

            self.detector, self.classifiers = load_onnx_models(bundle, detection_threshold, threads=threads)
        else:
            self.detector = Detector.from_checkpoint(bundle.path("detector"), detection_threshold, resolved)
            self.classifiers = {bone: TorchClassifier(bundle.path(bone), resolved) for bone in BONES}
            for bone, classifier in self.classifiers.items():
                check_member(bundle, bone, classifier.payload)
        self.schemes = {bone: scheme_from_dict(bundle.manifest[bone]["scheme"]) for bone in BONES}
        # None (bundles from classifiers trained without off-bone crops): every reading is given
        self.max_spread = {bone: readability_limit(bundle.manifest[bone]) for bone in BONES}
        self.min_confidence = min_confidence
        self.review_detection_score = (REVIEW_DETECTION_SCORE if review_detection_score is None
                                       else review_detection_score)
        # what a worker process needs to build the same predictor
        self.settings = {"detection_threshold": detection_threshold, "min_confidence": min_confidence,
                         "runtime": runtime, "review_detection_score": self.review_detection_score,
                         "device": str(resolved)}
        self._torch_classifiers: dict[str, torch.nn.Module] = {}

    def torch_classifier(self, bone: str) -> torch.nn.Module:
        """The PyTorch model of a bone's classifier on the CPU (Grad-CAM needs its gradients)."""
        classifier = self.classifiers[bone]
        if isinstance(classifier, TorchClassifier) and classifier.device.type == "cpu":
            return classifier.model
        if bone not in self._torch_classifiers:
            self._torch_classifiers[bone] = load_classifier(self.bundle.path(bone))[0]
        return self._torch_classifiers[bone]

    def crops(self, image: np.ndarray, boxes: dict[str, list[float]], laterality: str | None) -> dict[str, np.ndarray]:
        return {bone: crop_region(image, tuple(box), needs_mirror(laterality)) for bone, box in boxes.items()}

    def classify(self, crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class probabilities per bone; each bone's crop runs through its own classifier."""
        return {bone: self.classifiers[bone].probabilities(crop[None])[0] for bone, crop in crops.items()}

    def predict(self, radiograph: Radiograph, input_sha256: str = "",
                boxes: dict[str, tuple[float, float, float, float]] | None = None,
                patient: PatientInfo | None = None) -> StageReport:
        """Detect (or take the ``boxes`` given, e.g. drawn by a reader), crop, classify, check
        against the patient's age and sex when given, advise."""
        return self.predict_with_crops(radiograph, input_sha256, boxes, patient)[0]

    def predict_with_crops(self, radiograph: Radiograph, input_sha256: str = "",
                           boxes: dict[str, tuple[float, float, float, float]] | None = None,
                           patient: PatientInfo | None = None) -> tuple[StageReport, dict[str, np.ndarray]]:
        """``predict``, also returning the classifier crops (for overlays and Grad-CAM)."""
        image = radiograph.image
        detections = self.detector(image) if boxes is None else {}
        if boxes is None:
            boxes = {bone: list(d.box) for bone, d in detections.items() if d.box is not None}
        else:
            height, width = image.shape
            boxes = {bone: list(checked_box(box, width, height, f"{radiograph.meta.source}: {bone} box"))
                     for bone, box in boxes.items()}
        reasons: list[str] = []
        # readings the growth-table checks disbelieve, by what the check found: listed first (an
        # overlay folds the last reasons), and they withhold the guidance
        contradictions: dict[str, list[str]] = {}
        laterality, laterality_source = radiograph.meta.laterality, "metadata"
        if laterality is None:
            laterality, laterality_source = hand_side(image, boxes)
        if laterality is None:
            reasons.append("hand side unknown: crops not mirrored")
        crops = self.crops(image, boxes, laterality)
        probabilities = self.classify(crops)
        results = {}
        # The detector chooses its radius and ulna boxes as a pair: when its radius box shows no
        # readable bone the pair is misplaced (both on the thumb, or on the carpus of a film cut off
        # at the wrist) and the ulna's reading is withheld with it. Not the other way round: the
        # ulna's readability tells bone from no bone less sharply (held-out real films' off-bone
        # crops read 9-12% against the radius's 5-6%), so a withheld ulna says little of the radius
        # box. Held-out real films (190ffbb's detector, two seeds): 5-6 of 309 radius boxes
        # withheld, 4 of their ulna boxes off the ulna or on an unreadable film (README).
        unreadable: set[str] = set()
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
                if detection is not None and detection.score < self.review_detection_score:
                    reasons.append(f"{bone} box uncertain (detection score {detection.score:.3f} is below "
                                   f"{self.review_detection_score:.2f}): check it lies on the {bone}")
                read_probabilities(result, scheme, probabilities[bone])
                limit = self.max_spread[bone]
                if not readable(probabilities[bone], limit):
                    withhold_reading(result)
                    unreadable.add(bone)
                    reasons.append(f"{bone} box shows no readable bone (its reading spreads over "
                                   f"±{result.class_spread:.1f} classes, readable bone over at most "
                                   f"±{limit:.1f}): no {bone} reading; check the box")
                elif bone == "ulna" and "radius" in unreadable and detections:
                    withhold_reading(result)
                    reasons.append("ulna reading withheld with the radius's: the detector places the two boxes "
                                   "as a pair; check both boxes")
                elif result.phase_confidence < self.min_confidence:
                    reasons.append(f"{bone} classification confidence {result.phase_confidence:.2f} is below "
                                   f"{self.min_confidence:.2f}")
                if result.prediction is not None and patient is not None and patient.age_years is not None:
                    reason = implausible_reading(scheme, result.prediction, patient)
                    if reason:
                        contradictions.setdefault("the reading is implausible for the patient's age",
                                                  []).append(f"{bone}: {reason}")
            results[bone] = result
        both_staged = results["radius"].scheme == results["ulna"].scheme == "stage"
        if both_staged and all(r.prediction for r in results.values()):
            reason = discordance(Stage("radius", int(results["radius"].prediction[1:])),
                                 Stage("ulna", int(results["ulna"].prediction[1:])))
            if reason:
                contradictions["radius and ulna are further apart than the growth table allows"] = [reason]
        guidance = None
        if results["radius"].phase and results["ulna"].phase:
            readings = _stage_or_phase(results["radius"]), _stage_or_phase(results["ulna"])
            guidance = (withheld_guidance(*readings, " and ".join(sorted(contradictions))) if contradictions
                        else bracing_guidance(*readings)).to_dict()
        reasons = [reason for found in contradictions.values() for reason in found] + reasons
        height, width = image.shape
        return StageReport(
            source=radiograph.meta.source, input_sha256=input_sha256, image_size=[height, width],
            laterality=laterality, laterality_source=laterality_source, radius=results["radius"],
            ulna=results["ulna"], guidance=guidance, needs_review=bool(reasons), review_reasons=reasons,
            model_fingerprint=self.bundle.fingerprint,
        ), crops


def read_probabilities(result: BoneResult, scheme: ClassScheme, p: np.ndarray) -> None:
    """Fill a bone's reading from its class probabilities: the most probable phase, then the most
    probable class inside it."""
    phase_of = np.array(scheme.phase_indices())
    phase_p = np.bincount(phase_of, weights=p, minlength=len(PHASES))
    phase = int(phase_p.argmax())
    members = np.flatnonzero(phase_of == phase)
    best = int(members[p[members].argmax()])
    result.probabilities = {name: round(float(v), 4) for name, v in zip(scheme.classes, p)}
    result.prediction = scheme.classes[best]
    result.phase = PHASES[phase]
    result.confidence = round(float(p[best]), 4)
    result.phase_confidence = round(float(phase_p[phase]), 4)
    if scheme.name == "stage":
        result.expected_stage = round(float(p @ np.arange(1, len(p) + 1)), 3)
    result.class_spread = round(float(class_spread(p)), 3)


def withhold_reading(result: BoneResult) -> None:
    """Clear a bone's reading, keeping its box, probabilities and spread (what was seen)."""
    result.prediction = result.phase = result.confidence = result.phase_confidence = None
    result.expected_stage = None


def implausible_reading(scheme: ClassScheme, prediction: str, patient: PatientInfo) -> str | None:
    """Why a class reading is implausible for the patient: every stage it stands for is (the
    reason given is that of its stage nearest the patient's age)."""
    stages = scheme.stages_of(scheme.classes.index(prediction))
    reasons = [implausible_for_age(stage, patient.age_years, patient.sex) for stage in stages]
    if not reasons or not all(reasons):
        return None
    nearest = min(range(len(stages)), key=lambda i: abs(mean_age_at(stages[i], patient.sex) - patient.age_years))
    return reasons[nearest] if len(stages) == 1 else f"{prediction} ({stages[0]}-{stages[-1]}): {reasons[nearest]}"


def _stage_or_phase(result: BoneResult) -> str:
    """A fine-scheme prediction is a stage code (R7); otherwise the phase."""
    return result.prediction if result.scheme == "stage" else result.phase
