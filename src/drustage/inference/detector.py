"""The detector at prediction time: a network (any backend) wrapped with the shared pre- and
post-processing, so the PyTorch and ONNX Runtime paths differ only in the network arithmetic.

A backend is any callable taking a downscaled uint8 image and returning torchvision's detection
output (``boxes``, ``labels``, ``scores``); ``Detector`` composes one with downscaling, the best
box per bone and the mapping back to original pixels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision.ops import batched_nms

from drustage.imaging import downscale
from drustage.inference.checkpoints import load_checkpoint, mismatch_error
from drustage.inference.device import DEFAULT_DEVICE, mixed_precision, resolve_device
from drustage.models.config import DetectorConfig
from drustage.models.detector import Detection, best_boxes, build_detector, stray_boxes
from drustage.thresholds import DETECTION_THRESHOLD

__all__ = ["Detector", "DetectorBackend", "TorchDetectorBackend", "detections_on_cpu", "detector_input_side",
           "load_detector", "rescued_boxes"]

DetectorBackend = Callable[[np.ndarray], dict[str, torch.Tensor]]
# Boxes of one bone from the direct and the mirrored pass overlapping more than this are one box.
MERGE_IOU = 0.5


def load_detector(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained detector from its checkpoint (weights only, config validated), in eval mode."""
    payload = load_checkpoint(path, "detector")
    try:
        model_config = DetectorConfig(**payload["config"]["model"])
        model = build_detector(model_config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise mismatch_error(path, error) from None
    model.eval()
    return model, payload


def detector_input_side(payload: dict) -> int:
    """The longer side a detector checkpoint's images are downscaled to."""
    return int(payload["config"]["model"]["max_size"])


def detections_on_cpu(output: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's detection output moved to the CPU, floating-point parts in float32 (autocast
    on CUDA may leave them in half precision)."""
    return {key: value.cpu().float() if value.is_floating_point() else value.cpu() for key, value in output.items()}


def rescued_boxes(network: Callable[[bool], dict[str, torch.Tensor]], size: tuple[int, int],
                  threshold: float = DETECTION_THRESHOLD) -> tuple[dict[str, Detection], dict[str, torch.Tensor]]:
    """``best_boxes`` of ``network(False)``, the output on an image of ``size`` (height, width);
    where that leaves a bone not found, of it merged (per-class NMS) with ``network(True)``, the
    output on the mirrored image, mapped back. The network is trained on mirrored hands too, and
    a faint ulna it misses one way round it often finds the other: on the demo detector's held-out
    real films the ulna went from 95.9% to 97.2% centred on the right bone; films with both bones
    found are read as before (phantoms included). Returns the kept boxes and the output they came from."""
    output = network(False)
    found = best_boxes(output, size, threshold)
    if all(d.box is not None for d in found.values()):
        return found, output
    mirrored = network(True)
    boxes = mirrored["boxes"].clone()
    boxes[:, [0, 2]] = size[1] - mirrored["boxes"][:, [2, 0]]
    mirrored = {**mirrored, "boxes": boxes}
    merged = {key: torch.cat([output[key], mirrored[key]]) for key in ("boxes", "scores", "labels")}
    keep = batched_nms(merged["boxes"], merged["scores"], merged["labels"], MERGE_IOU)
    merged = {key: value[keep] for key, value in merged.items()}
    return best_boxes(merged, size, threshold), merged


class TorchDetectorBackend:
    """A torchvision detection model run by PyTorch on ``device`` (mixed precision on CUDA);
    outputs come back to the CPU in float32."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = DEFAULT_DEVICE):
        self.device = resolve_device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last)

    def __call__(self, pixels: np.ndarray) -> dict[str, torch.Tensor]:
        return self.detect(torch.from_numpy(pixels.astype(np.float32) / 255.0)[None])

    def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The output on one (1, H, W) image in [0, 1]."""
        with torch.inference_mode(), mixed_precision(self.device):
            output = self.model([image.to(self.device)])[0]
        return detections_on_cpu(output)


class Detector:
    """A detector backend applied to whole radiographs of any size; boxes in original pixels."""

    def __init__(self, backend: DetectorBackend, max_side: int, threshold: float = DETECTION_THRESHOLD):
        self.backend = backend
        self.max_side = max_side
        self.threshold = threshold

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, threshold: float = DETECTION_THRESHOLD,
                        device: str | torch.device = DEFAULT_DEVICE) -> Detector:
        model, payload = load_detector(checkpoint)
        return cls(TorchDetectorBackend(model, device), detector_input_side(payload), threshold)

    def __call__(self, image: np.ndarray) -> dict[str, Detection]:
        return self.detect(image)[0]

    def detect(self, image: np.ndarray) -> tuple[dict[str, Detection], list[tuple[float, float, float, float]]]:
        """The best box per bone and the stray candidates (``models.detector.stray_boxes``)."""
        pixels, frame = downscale(image, self.max_side)
        found, output = rescued_boxes(lambda mirrored: self.backend(np.ascontiguousarray(pixels[:, ::-1])
                                                                    if mirrored else pixels),
                                      pixels.shape, self.threshold)
        strays = [frame.to_original(box, image.shape) for box in stray_boxes(output, found, pixels.shape)]
        return {bone: replace(d, box=None if d.box is None else frame.to_original(d.box, image.shape))
                for bone, d in found.items()}, strays
