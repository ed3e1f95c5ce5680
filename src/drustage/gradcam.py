"""Grad-CAM on the classifier's last convolution: which part of the crop drove the class."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def grad_cam(model: nn.Module, crop: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Heatmap in [0, 1] with the crop's shape (Selvaraju et al.: ReLU of the gradient-weighted
    sum of the last conv layer's activations), for ``class_index`` or the predicted class."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no convolution for Grad-CAM")
    store: dict[str, torch.Tensor] = {}
    hook = convs[-1].register_forward_hook(lambda _m, _i, output: store.__setitem__("activation", output))
    try:
        model.eval()
        x = torch.from_numpy(np.ascontiguousarray(crop))[None, None].requires_grad_(False)
        with torch.enable_grad():
            logits = model(x)
            target = int(logits.argmax(1)) if class_index is None else class_index
            activation = store["activation"]
            gradient, = torch.autograd.grad(logits[0, target], activation)
    finally:
        hook.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=crop.shape, mode="bilinear", align_corners=False)[0, 0].detach()
    peak = float(cam.max())
    return (cam / peak).numpy() if peak > 0 else cam.numpy()
