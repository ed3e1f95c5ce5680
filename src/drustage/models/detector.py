"""DRU detector: torchvision's Faster R-CNN with the paper's ZFNet backbone or a modern one.

Classes: 0 background, 1 radius, 2 ulna. Inputs are 1-channel float images in [0, 1] of any
size; torchvision's transform resizes them (``min_size``/``max_size``) and maps the boxes back to
original pixels, ``[x1, y1, x2, y2]``. No weights are ever downloaded: random initialisation, or a
local state-dict file given by the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from drustage.stages import BONES

LABELS = {bone: i + 1 for i, bone in enumerate(BONES)}  # 1 radius, 2 ulna
BACKBONES = ("zfnet", "mobilenet_v3", "resnet18_fpn")


class ZFNetFeatures(nn.Module):
    """ZFNet conv1-conv5 as the paper describes: 96x7x7/2, pool 3/2, 256x5x5/2, pool 3/2,
    then 3x3 convs of 384, 384, 256. Output stride 16, 256 channels.

    The paper started from ImageNet weights; with none to download, ``batch_norm`` (default)
    adds BatchNorm after each conv and He initialisation so the net trains from scratch. With
    ``batch_norm=False`` it is the plain net with the paper's Gaussian (std 0.01) initialisation.
    """

    def __init__(self, in_channels: int = 1, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for index, (out, kernel, stride) in enumerate(((96, 7, 2), (256, 5, 2), (384, 3, 1), (384, 3, 1), (256, 3, 1))):
            layers.append(nn.Conv2d(in_channels, out, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            if index < 2:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            in_channels = out
        self.body = nn.Sequential(*layers)
        self.out_channels = 256
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if batch_norm:
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(module.weight, std=0.01)
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _roi_pool_class():
    from torchvision.ops import MultiScaleRoIAlign, RoIPool

    class SingleLevelRoIPool(MultiScaleRoIAlign):
        """RoI max pooling (the paper's) over the single ZFNet feature map. It subclasses
        ``MultiScaleRoIAlign`` only because ``FasterRCNN`` accepts no other ``box_roi_pool`` type."""

        def __init__(self, output_size: int = 7, spatial_scale: float = 1 / 16):
            super().__init__(["0"], output_size, sampling_ratio=0)
            self.pool = RoIPool(output_size, spatial_scale)

        def forward(self, features, proposals, image_shapes):
            return self.pool(features["0"], proposals)

    return SingleLevelRoIPool



@dataclass(frozen=True)
class DetectorConfig:
    backbone: str = "zfnet"
    min_size: int = 384  # shorter side after resizing, pixels
    max_size: int = 512
    # Two objects per radiograph: few proposals suffice, and each costs two FC-4096 layers.
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 20  # 50 gave the same boxes, 17% slower (bench/detector_settings.py)
    box_batch_size_per_image: int = 64
    box_detections_per_img: int = 20
    representation_size: int = 4096  # the paper's two FC-4096 layers; smaller trains faster
    batch_norm: bool = True  # ZFNet only: see ZFNetFeatures
    roi_pool: str = "roipool"  # ZFNet only: the paper's RoI max pooling, or "roialign" (no box quantisation)

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {', '.join(BACKBONES)}")
        if self.roi_pool not in ("roipool", "roialign"):
            raise ValueError(f"roi_pool must be roipool or roialign, got {self.roi_pool!r}")
        if not 64 <= self.min_size <= self.max_size:
            raise ValueError(f"need 64 <= min_size <= max_size, got {self.min_size}, {self.max_size}")


def build_detector(config: DetectorConfig, weights: str | Path | None = None):
    """A torchvision ``FasterRCNN`` for 1-channel radiographs, randomly initialised unless
    ``weights`` names a local state-dict file."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    config.validate()
    common = dict(num_classes=len(BONES) + 1, min_size=config.min_size, max_size=config.max_size,
                  image_mean=[0.5], image_std=[0.25],
                  rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
                  rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
                  rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
                  rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
                  box_batch_size_per_image=config.box_batch_size_per_image,
                  box_detections_per_img=config.box_detections_per_img)
    if config.backbone == "zfnet":
        backbone = ZFNetFeatures(batch_norm=config.batch_norm)
        anchors = AnchorGenerator(sizes=((24, 40, 64, 100),), aspect_ratios=((0.75, 1.0, 1.33),))
        if config.roi_pool == "roipool":
            pool = _roi_pool_class()(7, 1 / 16)
        else:
            from torchvision.ops import MultiScaleRoIAlign

            pool = MultiScaleRoIAlign(["0"], 7, sampling_ratio=2)
        model = FasterRCNN(
            backbone, rpn_anchor_generator=anchors, box_roi_pool=pool,
            box_head=TwoMLPHead(256 * 7 * 7, config.representation_size),
            box_predictor=FastRCNNPredictor(config.representation_size, len(BONES) + 1),
            num_classes=None, **{k: v for k, v in common.items() if k != "num_classes"},
        )
    elif config.backbone == "mobilenet_v3":
        from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

        model = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, **common)
        _to_grayscale_stem(model)
    else:
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
        model = FasterRCNN(backbone, **common)
        _to_grayscale_stem(model)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"{path}: weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state.get("state_dict", state), strict=False)
        if unexpected or len(missing) == len(model.state_dict()):
            raise ValueError(f"{path}: weights do not fit the {config.backbone} detector")
    return model


def _to_grayscale_stem(model: nn.Module) -> None:
    """Replace the first 3-channel convolution with a 1-channel one (radiographs are grey)."""
    for name, module in model.backbone.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent = model.backbone.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model.backbone
            replacement = nn.Conv2d(1, module.out_channels, module.kernel_size, module.stride, module.padding,
                                    bias=module.bias is not None)
            setattr(parent, name.rsplit(".", 1)[-1], replacement)
            return
    raise AssertionError("no 3-channel stem convolution found")


@dataclass(frozen=True)
class Detection:
    bone: str
    box: tuple[float, float, float, float] | None  # None: not found
    score: float


def best_boxes(output: dict[str, torch.Tensor], image_size: tuple[int, int], threshold: float = 0.5) -> dict[str, Detection]:
    """One best box per bone from a torchvision detection output; below ``threshold`` the bone
    is reported as not found (``box`` None, its best score kept). Boxes are clipped to the image
    ``(height, width)``."""
    height, width = image_size
    result = {}
    for bone, label in LABELS.items():
        mask = output["labels"] == label
        if not bool(mask.any()):
            result[bone] = Detection(bone, None, 0.0)
            continue
        scores = output["scores"][mask]
        best = int(scores.argmax())
        score = float(scores[best])
        x1, y1, x2, y2 = output["boxes"][mask][best].tolist()
        box = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
        valid = box[2] > box[0] and box[3] > box[1]
        result[bone] = Detection(bone, box if score >= threshold and valid else None, score)
    return result
