"""The stage classifiers at prediction time: checkpoint loading and the PyTorch backend.

A classifier backend maps crops (N, 128, 96) to class probabilities (N, C); ``TorchClassifier``
and ``drustage.inference.onnx.OnnxClassifier`` are interchangeable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.nn import functional as F

from drustage.data.crops import CONTEXT, CROP_SIZE
from drustage.inference.checkpoints import load_checkpoint, mismatch_error
from drustage.inference.device import DEFAULT_DEVICE, mixed_precision, resolve_device
from drustage.models.classifier import StageClassifier
from drustage.models.spec import parse_net_spec

__all__ = ["ClassifierBackend", "TorchClassifier", "class_spread", "expected_class", "load_classifier",
           "predict_logits", "readability_limit", "readable", "window_batch"]


class ClassifierBackend(Protocol):
    def probabilities(self, crops: np.ndarray) -> np.ndarray: ...


def window_batch(context: torch.Tensor, generator: torch.Generator | None, max_shift: float,
                 scale_range: tuple[float, float], max_rotation: float = 0.0) -> torch.Tensor:
    """Cut 128x96 windows from context crops (on their device); with a generator (on the CPU, so
    the draws are the same on every device), randomly shifted, scaled and turned by up to
    ``max_rotation`` degrees."""
    n = context.shape[0]
    scale = torch.full((n,), 1.0 / CONTEXT)
    shift = torch.zeros(n, 2)
    angle = torch.zeros(n)
    if generator is not None:
        low, high = scale_range
        scale = scale * (low + (high - low) * torch.rand(n, generator=generator))
        # normalised coordinates span 2 across the context; the window spans 2 / CONTEXT
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift * 2 / CONTEXT
        if max_rotation:
            angle = torch.deg2rad((torch.rand(n, generator=generator) * 2 - 1) * max_rotation)
    # a turn in pixels, written in normalised coordinates (x spans the width, y the height)
    aspect = CROP_SIZE[1] / CROP_SIZE[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * torch.cos(angle)
    theta[:, 0, 1] = -scale * torch.sin(angle) / aspect
    theta[:, 1, 0] = scale * torch.sin(angle) * aspect
    theta[:, 1, 1] = scale * torch.cos(angle)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(context.device), (n, 1, *CROP_SIZE), align_corners=False)
    return F.grid_sample(context, grid, mode="bilinear", padding_mode="border", align_corners=False)


def load_classifier(path: str | Path) -> tuple[StageClassifier, dict]:
    """Rebuild a trained classifier from its checkpoint (weights only, config validated), in eval mode."""
    from drustage.stages import scheme_from_dict

    payload = load_checkpoint(path, "classifier")
    try:
        scheme = scheme_from_dict(payload["scheme"])
        config = payload["config"]
        spec = parse_net_spec(config["conv_spec"], config["fc_spec"])
        # checkpoints from before the option were trained on raw [0, 1] crops
        model = StageClassifier(spec, scheme.num_classes, dropout=config["dropout"],
                                input_size=tuple(payload["input_size"]),
                                standardize=config.get("standardize", False),
                                batch_norm=config.get("batch_norm", False))
        model.load_state_dict(payload["state_dict"])
        model.temperature.fill_(float(payload.get("calibration", {}).get("temperature", 1.0)))
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise mismatch_error(path, error) from None
    model.eval()
    payload["scheme_object"] = scheme
    return model, payload


def predict_logits(model: torch.nn.Module, context: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Logits (float32, on the CPU) for context crops, centre windows (no augmentation), on the
    model's device."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode(), mixed_precision(device):
        for start in range(0, len(context), batch):
            windows = window_batch(context[start:start + batch].to(device), None, 0.0, (1.0, 1.0))
            outputs.append(model(windows.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(outputs)


def expected_class(probabilities: np.ndarray) -> np.ndarray:
    """The probability-weighted class index (classes are ordinal): a continuous maturity score."""
    return probabilities @ np.arange(probabilities.shape[1], dtype=np.float64)


def class_spread(probabilities: np.ndarray) -> np.ndarray:
    """The standard deviation of the class index under the probabilities (classes are ordinal), in
    classes: about the target's width on readable bone, near the uniform's on a box that shows none
    (a classifier trained with off-bone crops reads those as no class in particular)."""
    index = np.arange(probabilities.shape[-1], dtype=np.float64)
    mean = probabilities @ index
    return np.sqrt(np.clip(probabilities @ index ** 2 - mean ** 2, 0.0, None))


def readability_limit(record: dict) -> float | None:
    """The class spread past which a classifier's reading is withheld, as its checkpoint payload or
    its bundle-manifest entry records it (``readability``); None: every reading is given."""
    return (record.get("readability") or {}).get("max_spread")


def readable(probabilities: np.ndarray, limit: float | None) -> np.ndarray:
    """Which readings are given under a readability limit (the rest show no readable bone)."""
    if limit is None:
        return np.ones(probabilities.shape[:-1], bool)
    return class_spread(probabilities) <= limit


class TorchClassifier:
    """A stage classifier run by PyTorch on ``device`` (mixed precision on CUDA): crops
    (N, 128, 96) -> class probabilities (N, C)."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device = DEFAULT_DEVICE):
        model, self.payload = load_classifier(checkpoint)
        self.device = resolve_device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last)

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))[:, None].to(self.device)
        with torch.inference_mode(), mixed_precision(self.device):
            logits = self.model(tensor.contiguous(memory_format=torch.channels_last))
        return logits.float().softmax(1).cpu().numpy()
