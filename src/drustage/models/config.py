"""The detector's configuration, apart from the network code so the command line can show its
defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from drustage.thresholds import PARTNER_THRESHOLD

__all__ = ["BACKBONES", "DetectorConfig"]

BACKBONES = ("zfnet", "mobilenet_v3", "resnet18_fpn")


@dataclass(frozen=True)
class DetectorConfig:
    backbone: str = "zfnet"
    min_size: int = 384  # shorter side after resizing, pixels
    max_size: int = 512
    # Two objects per radiograph: few proposals suffice, and each costs two FC-4096 layers.
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 300
    # 20 looked enough on phantoms, but on real films the ulna's proposal was often not among them:
    # ulna centred on 217 held-out real films 95.7% -> 98.0% (mean of three demo detectors) at 100
    rpn_post_nms_top_n_test: int = 100
    box_batch_size_per_image: int = 64
    box_detections_per_img: int = 200  # every proposal of both bones: one bone's boxes cannot crowd out the other's
    box_score_thresh: float = PARTNER_THRESHOLD  # keep the low-scoring partners best_boxes may pair
    representation_size: int = 4096  # the paper's two FC-4096 layers; smaller trains faster
    batch_norm: bool = True  # ZFNet only: see ZFNetFeatures
    roi_pool: str = "roipool"  # ZFNet only: the paper's RoI max pooling, or "roialign" (no box quantisation)
    roi_align_samples: int = 2  # "roialign" only: sample points per bin side (torchvision's 2; 0 adapts to the box)

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {', '.join(BACKBONES)}")
        if self.roi_pool not in ("roipool", "roialign"):
            raise ValueError(f"roi_pool must be roipool or roialign, got {self.roi_pool!r}")
        if not 0 <= self.roi_align_samples <= 8:
            raise ValueError(f"roi_align_samples must be 0 (adaptive) to 8, got {self.roi_align_samples}")
        if not 64 <= self.min_size <= self.max_size:
            raise ValueError(f"need 64 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
