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

from drustage.imaging import downscale
from drustage.inference.checkpoints import load_checkpoint, mismatch_error
from drustage.inference.device import DEFAULT_DEVICE, mixed_precision, resolve_device
from drustage.models.config import DetectorConfig
from drustage.models.detector import Detection, best_boxes, build_detector
from drustage.thresholds import DETECTION_THRESHOLD

__all__ = ["Detector", "DetectorBackend", "TorchDetectorBackend", "detections_on_cpu", "detector_input_side",
           "load_detector"]

DetectorBackend = Callable[[np.ndarray], dict[str, torch.Tensor]]


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


class TorchDetectorBackend:
    """A torchvision detection model run by PyTorch on ``device`` (mixed precision on CUDA);
    outputs come back to the CPU in float32."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = DEFAULT_DEVICE):
        self.device = resolve_device(device)
        self.model = model.to(self.device)

    def __call__(self, pixels: np.ndarray) -> dict[str, torch.Tensor]:
        image = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None].to(self.device)
        with torch.inference_mode(), mixed_precision(self.device):
            output = self.model([image])[0]
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
        pixels, scale = downscale(image, self.max_side)
        found = best_boxes(self.backend(pixels), pixels.shape, self.threshold)
        # the downscaled size is rounded, so a box at its edge can map back past the image by a pixel
        limits = np.array(image.shape[::-1] * 2, dtype=float)
        return {bone: replace(d, box=None if d.box is None
                              else tuple(np.minimum(np.array(d.box) / scale, limits).tolist()))
                for bone, d in found.items()}
