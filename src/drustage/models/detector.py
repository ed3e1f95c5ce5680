"""DRU detector: torchvision's Faster R-CNN with the paper's ZFNet backbone or a modern one.

Classes: 0 background, 1 radius, 2 ulna. Inputs are 1-channel float images in [0, 1] of any
size; torchvision's transform resizes them (``min_size``/``max_size``) and maps the boxes back to
original pixels, ``[x1, y1, x2, y2]``. No weights are ever downloaded: random initialisation, or a
local state-dict file given by the user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from drustage.data.detection import LABELS, box_iou
from drustage.io_utils import load_weights_only
from drustage.models.config import DetectorConfig
from drustage.thresholds import DETECTION_THRESHOLD, PARTNER_THRESHOLD
from drustage.stages import BONES

# A radius/ulna pair shares at most this fraction of the smaller box, and their centres lie
# within this many box widths; true pairs reach 0.49 and 1.03 (phantom and real boxes, measured).
PAIR_MAX_SHARED = 0.6
PAIR_MAX_GAP = 1.5
# A candidate scoring at least STRAY_SCORE that overlaps neither kept box (IoU below STRAY_IOU) is
# a stray: what the detector proposes off the wrist (fingertips, the thumb, the carpus, the film's
# edge), and so what a wrong kept box on another film shows. Held-out real films: 63 of 309 have one.
STRAY_SCORE = 0.3
STRAY_IOU = 0.1


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
            # torchvision's CPU kernel has no bfloat16 (training under CPU autocast): pool in float32
            return self.pool(features["0"].float(), [p.float() for p in proposals])

    return SingleLevelRoIPool



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
                  box_detections_per_img=config.box_detections_per_img,
                  box_score_thresh=config.box_score_thresh)
    if config.backbone == "zfnet":
        backbone = ZFNetFeatures(batch_norm=config.batch_norm)
        anchors = AnchorGenerator(sizes=((24, 40, 64, 100),), aspect_ratios=((0.75, 1.0, 1.33),))
        if config.roi_pool == "roipool":
            pool = _roi_pool_class()(7, 1 / 16)
        else:
            from torchvision.ops import MultiScaleRoIAlign

            pool = MultiScaleRoIAlign(["0"], 7, sampling_ratio=config.roi_align_samples)
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
        state = load_weights_only(path)
        state = state.get("state_dict", state) if isinstance(state, dict) else None
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except (RuntimeError, TypeError, AttributeError):  # shapes of another network, or no state dict at all
            missing, unexpected = [], ["(unloadable)"]
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


def _clipped(box: list[float], height: int, width: int) -> tuple[float, float, float, float] | None:
    x1, y1, x2, y2 = (min(max(v, 0.0), limit) for v, limit in zip(box, (width, height, width, height)))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def plausible_pair(radius: tuple[float, ...], ulna: tuple[float, ...]) -> bool:
    """Whether two boxes can be the distal radius and ulna of one wrist: side by side (not the
    same bone twice) and close (not a side marker or a fingertip across the film)."""
    width = min(radius[2], ulna[2]) - max(radius[0], ulna[0])
    height = min(radius[3], ulna[3]) - max(radius[1], ulna[1])
    smaller = min((b[2] - b[0]) * (b[3] - b[1]) for b in (radius, ulna))
    if width > 0 and height > 0 and width * height > PAIR_MAX_SHARED * smaller:
        return False
    centre_gap = math.dist(((radius[0] + radius[2]) / 2, (radius[1] + radius[3]) / 2),
                           ((ulna[0] + ulna[2]) / 2, (ulna[1] + ulna[3]) / 2))
    return centre_gap < PAIR_MAX_GAP * max(radius[2] - radius[0], ulna[2] - ulna[0])


def best_boxes(output: dict[str, torch.Tensor], image_size: tuple[int, int], threshold: float = DETECTION_THRESHOLD,
               partner_threshold: float = PARTNER_THRESHOLD) -> dict[str, Detection]:
    """One box per bone from a torchvision detection output: the best-scoring radius/ulna pair
    that ``plausible_pair`` accepts, one of them at ``threshold`` or above and the other at
    ``partner_threshold`` or above (a faint ulna beside a clear radius is still that ulna). A bone
    with no such box, or one that fits with no box of the other bone, is reported as not found
    (``box`` None, its best score kept) so the film is flagged rather than read from a wrong box.
    Boxes are clipped to ``(height, width)``."""
    height, width = image_size
    candidates: dict[str, list[tuple[float, tuple[float, float, float, float] | None]]] = {}
    for bone, label in LABELS.items():
        mask = output["labels"] == label
        found = [(float(score), _clipped(box, height, width))
                 for score, box in zip(output["scores"][mask].tolist(), output["boxes"][mask].tolist())]
        candidates[bone] = sorted(found, key=lambda c: -c[0])
    best_score = {bone: found[0][0] if found else 0.0 for bone, found in candidates.items()}
    floor = min(threshold, partner_threshold)
    usable = {bone: [c for c in found if c[0] >= floor and c[1] is not None] for bone, found in candidates.items()}
    chosen: dict[str, tuple[float, tuple[float, float, float, float]] | None] = {bone: None for bone in LABELS}
    pairs = [(r, u) for r in usable["radius"] for u in usable["ulna"]
             if max(r[0], u[0]) >= threshold and plausible_pair(r[1], u[1])]
    confident = {bone: [c for c in found if c[0] >= threshold] for bone, found in usable.items()}
    if pairs:
        chosen["radius"], chosen["ulna"] = max(pairs, key=lambda pair: pair[0][0] * pair[1][0])
    elif confident["radius"] or confident["ulna"]:
        # no pair fits: keep the single most confident box; the other bone is not found
        bone = max((b for b in LABELS if confident[b]), key=lambda b: confident[b][0][0])
        chosen[bone] = confident[bone][0]
    return {bone: Detection(bone, None, best_score[bone]) if chosen[bone] is None
            else Detection(bone, chosen[bone][1], chosen[bone][0]) for bone in LABELS}


def stray_boxes(output: dict[str, torch.Tensor], found: dict[str, Detection], image_size: tuple[int, int],
                limit: int = 3) -> list[tuple[float, float, float, float]]:
    """Up to ``limit`` stray candidates of a detection output (either label, best first, no two
    overlapping by half), clipped to ``(height, width)``; none unless both bones were found, since
    a stray beside a wrong kept box may be the bone itself."""
    kept = [d.box for d in found.values() if d.box is not None]
    if len(kept) < len(found):
        return []
    height, width = image_size
    strays: list[tuple[float, float, float, float]] = []
    for index in output["scores"].argsort(descending=True).tolist():
        box = _clipped(output["boxes"][index].tolist(), height, width)
        if len(strays) == limit or float(output["scores"][index]) < STRAY_SCORE:
            break
        if box is not None and all(box_iou(box, other) < STRAY_IOU for other in kept) \
                and all(box_iou(box, other) < 0.5 for other in strays):
            strays.append(box)
    return strays
