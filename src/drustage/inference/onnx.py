"""ONNX export of a bundle and an ONNX Runtime path that gives the same answers as PyTorch.

``export_onnx`` writes ``detector.onnx`` (the whole torchvision Faster R-CNN: resize, backbone,
RPN, RoI heads and NMS, for any input size), ``radius.onnx`` and ``ulna.onnx`` (logits, any
batch size) and ``onnx.json`` with the bundle fingerprint, so a stale export is refused rather
than silently used. Pre- and post-processing (downscale, best box per bone, softmax) stay in
the shared Python code, so both runtimes differ only in the network arithmetic.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from drustage.data.crops import CROP_SIZE
from drustage.inference.bundle import Bundle, BundleError
from drustage.inference.classifier import load_classifier
from drustage.inference.detector import Detector, detector_input_side, load_detector
from drustage.io_utils import atomic_path, atomic_write_text, file_sha256, read_json
from drustage.stages import BONES
from drustage.thresholds import DETECTION_THRESHOLD

__all__ = ["OnnxClassifier", "OnnxDetectorBackend", "default_onnx_dir", "export_onnx", "load_onnx_models"]

OPSET = 17
ONNX_MANIFEST = "onnx.json"
ONNX_FILES = {"detector": "detector.onnx", "radius": "radius.onnx", "ulna": "ulna.onnx"}


def default_onnx_dir(bundle: Bundle) -> Path:
    """``BUNDLE/onnx`` for a bundle directory, ``BUNDLE.onnx/`` beside a .zip bundle."""
    return bundle.source.with_suffix(".onnx") if bundle.source.is_file() else bundle.root / "onnx"


def _export(model: torch.nn.Module, example, path: Path, inputs: list[str], outputs: list[str],
            dynamic_axes: dict) -> None:
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # torchvision's detection code traces with many harmless TracerWarnings.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(tmp), opset_version=OPSET, dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic_axes)


def export_onnx(bundle: Bundle, out: str | Path | None = None) -> Path:
    """Export the bundle's three networks to ONNX in ``out`` (default ``default_onnx_dir``)."""
    out = Path(out) if out is not None else default_onnx_dir(bundle)
    out.mkdir(parents=True, exist_ok=True)
    detector, payload = load_detector(bundle.path("detector"))
    side = detector_input_side(payload)
    example = torch.rand(1, side, side * 3 // 4)
    _export(detector, ([example],), out / ONNX_FILES["detector"], ["image"], ["boxes", "labels", "scores"],
            {"image": [1, 2], "boxes": [0], "labels": [0], "scores": [0]})
    for bone in BONES:
        classifier, _ = load_classifier(bundle.path(bone))
        _export(classifier, (torch.rand(2, 1, *CROP_SIZE),), out / ONNX_FILES[bone], ["crops"], ["logits"],
                {"crops": [0], "logits": [0]})
    manifest = {"bundle_fingerprint": bundle.fingerprint, "opset": OPSET, "files": ONNX_FILES,
                "sha256": {part: file_sha256(out / name) for part, name in ONNX_FILES.items()},
                "detector_max_side": side, "torch": torch.__version__}
    atomic_write_text(out / ONNX_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return out


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle ORT threads otherwise spin for a while after each run, stealing the CPU from the
    # decoding, cropping and rendering around the networks (measured: render 18 -> 39 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise BundleError(f"{path}: not a usable ONNX model ({str(error).splitlines()[0][:200]})") from None


class OnnxDetectorBackend:
    """The exported detection network run by ONNX Runtime (a ``Detector`` backend)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.session = _session(path, threads)

    def __call__(self, pixels: np.ndarray) -> dict[str, torch.Tensor]:
        image = (pixels.astype(np.float32) / 255.0)[None]
        boxes, labels, scores = self.session.run(None, {"image": image})
        return {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                "scores": torch.from_numpy(scores)}


class OnnxClassifier:
    """A stage classifier run by ONNX Runtime: crops (N, 128, 96) -> class probabilities (N, C)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.session = _session(path, threads)

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {"crops": np.ascontiguousarray(crops[:, None], dtype=np.float32)})[0]
        logits = logits - logits.max(1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(1, keepdims=True)


def load_onnx_models(bundle: Bundle, threshold: float = DETECTION_THRESHOLD, folder: str | Path | None = None,
                     threads: int | None = None) -> tuple[Detector, dict[str, OnnxClassifier]]:
    """The exported networks of ``bundle``; raises ``BundleError`` when missing or stale."""
    folder = Path(folder) if folder is not None else default_onnx_dir(bundle)
    manifest_path = folder / ONNX_MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: no ONNX export of this bundle (run: drustage export-onnx {bundle.source})")
    manifest = read_json(manifest_path, BundleError)
    if not isinstance(manifest, dict) or manifest.get("bundle_fingerprint") != bundle.fingerprint:
        raise BundleError(f"{folder}: ONNX export is of another bundle version (re-run drustage export-onnx)")
    missing = [name for name in ONNX_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise BundleError(f"{folder}: ONNX export lacks {', '.join(missing)}")
    hashes = manifest.get("sha256")
    for part, name in ONNX_FILES.items():
        if not isinstance(hashes, dict) or file_sha256(folder / name) != hashes.get(part):
            raise BundleError(f"{folder / name}: not the {part} network this export recorded "
                              "(re-run drustage export-onnx)")
    side = manifest.get("detector_max_side")
    if not isinstance(side, int) or not 64 <= side <= 4096:
        raise BundleError(f"{manifest_path}: detector_max_side must be a whole number of pixels, got {side!r}")
    detector = Detector(OnnxDetectorBackend(folder / ONNX_FILES["detector"], threads), side, threshold)
    return detector, {bone: OnnxClassifier(folder / ONNX_FILES[bone], threads) for bone in BONES}
