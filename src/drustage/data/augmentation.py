"""The detector's training augmentation, apart from the dataset code so its settings (and the
command line that shows their defaults) need no torch."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_ZOOM", "BoxAugmentation"]

MAX_ZOOM = 1.15  # the augmentation's largest random zoom


@dataclass(frozen=True)
class BoxAugmentation:
    """The largest random turn in degrees and the smallest zoom (below 1 shrinks the film inside
    its frame, as on a scanned board); flips, shifts and exposure changes come with them."""

    rotation: float = 10.0
    min_scale: float = 0.85

    def validate(self) -> None:
        if not 0 <= self.rotation <= 90:
            raise ValueError(f"rotation must be between 0 and 90 degrees, got {self.rotation}")
        if not 0.2 <= self.min_scale <= MAX_ZOOM:
            raise ValueError(f"min scale must be between 0.2 and {MAX_ZOOM}, got {self.min_scale}")

    def transform(self):
        from torchvision.transforms import v2

        return v2.Compose([
            v2.RandomHorizontalFlip(0.5),  # a right hand is a mirrored left hand
            v2.RandomAffine(degrees=self.rotation, translate=(0.08, 0.08), scale=(self.min_scale, MAX_ZOOM)),
            v2.ColorJitter(brightness=0.25, contrast=0.3),
        ])
