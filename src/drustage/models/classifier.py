"""Spec-string CNN classifiers for 1x128x96 crops (the paper's architecture family)."""

from __future__ import annotations

import torch
from torch import nn

from drustage.data.crops import CROP_SIZE
from drustage.models.spec import NetSpec


class InstanceStandardize(nn.Module):
    """Each crop to zero mean and unit variance. Without it the paper's networks sit on a
    chance-level plateau for the first 6,000-18,000 training samples (measured on phantoms: ulna
    net8 at 5,000 samples 33% without, 95% with); it also removes exposure differences."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + 1e-6)


class StageClassifier(nn.Module):
    """Convs (same padding, ReLU, 2x2 max-pool each; with ``batch_norm`` a batch normalisation
    before each ReLU), then FC layers with optional dropout.

    Input ``(N, 1, H, W)`` float in [0, 1] (default 128x96), standardised per crop when
    ``standardize``; output logits ``(N, num_classes)``, divided by ``temperature`` (1 until a
    calibration sets it, see ``training.objectives.fit_temperature``), so every runtime and export
    gives calibrated probabilities. Weights are Xavier-uniform and biases zero, as in the paper.
    """

    def __init__(self, spec: NetSpec, num_classes: int, dropout: float = 0.5,
                 input_size: tuple[int, int] = CROP_SIZE, standardize: bool = False, batch_norm: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        channels = 1
        height, width = input_size
        for conv in spec.conv:
            if height < 2 or width < 2:
                raise ValueError(f"conv spec {spec.conv_spec} pools a {input_size} input below 1 pixel")
            layers += [nn.Conv2d(channels, conv.filters, conv.kernel, padding=conv.kernel // 2, bias=not batch_norm),
                       *([nn.BatchNorm2d(conv.filters)] if batch_norm else []), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels, height, width = conv.filters, height // 2, width // 2
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        units = channels * height * width  # computed from the spec, never written by hand
        for size in spec.fc:
            head += [nn.Linear(units, size), nn.ReLU(inplace=True)]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            units = size
        head.append(nn.Linear(units, num_classes))
        self.head = nn.Sequential(*head)
        self.input_size = input_size
        # parameter-free, so checkpoints with and without it share their state-dict keys
        self.normalize = InstanceStandardize() if standardize else nn.Identity()
        # not in the state dict: checkpoints record it as plain data beside the weights
        self.register_buffer("temperature", torch.ones(()), persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x))) / self.temperature
