"""Boxed radiographs as a detection dataset: read once, kept downscaled to the detector's input
size, split seeded, and augmented (flip, affine, exposure) with the boxes moving with the image.

A turned box is re-boxed from the ellipse inscribed in it, not from its corners: the corners'
enclosing box grows with every turn (by 16% a side at 10 degrees for a square), and a detector
trained on it learns to draw every box too large (the demo's, trained with turns up to 10 degrees,
drew boxes 10-30% wider and taller than the true ones). The ellipse keeps the box's size under a
turn, a better fit for a rounded bone end (Kalra et al., ICCV 2021)."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from drustage.data.augmentation import BoxAugmentation
from drustage.data.layout import Dataset, Record
from drustage.imaging import downscale, load_radiograph
from drustage.stages import BONES

__all__ = ["LABELS", "DetectionSet", "box_iou", "box_outlines", "boxed_records", "collate_detections",
           "enclosing_boxes", "split_records"]

log = logging.getLogger(__name__)

# Points on each box's inscribed ellipse carried through the augmentation (a multiple of 4, so
# the unturned ellipse touches all four sides of its box).
OUTLINE_POINTS = 32
MIN_BOX_SIDE = 4  # pixels; a box squeezed below this at the frame's edge is dropped

LABELS = {bone: i + 1 for i, bone in enumerate(BONES)}  # 1 radius, 2 ulna


def _load_item(task):
    path, boxes, max_side = task
    try:
        image = load_radiograph(path).image
    except ValueError as error:
        return str(error)
    pixels, frame = downscale(image, max_side)
    return pixels, {bone: frame.to_detector(box) for bone, box in boxes.items()}, frame, image.shape


class DetectionSet(torch.utils.data.Dataset):
    """Boxed radiographs held in memory at detector resolution, as ``(image, target)`` pairs,
    augmented when ``augment`` is given."""

    def __init__(self, dataset: Dataset, records: list[Record], max_side: int, augment: BoxAugmentation | None = None,
                 workers: int = 1, progress: bool = False):
        from concurrent.futures import ProcessPoolExecutor

        from tqdm import tqdm

        tasks = [(dataset.path_of(r), r.boxes, max_side) for r in records]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                loaded = list(tqdm(pool.map(_load_item, tasks, chunksize=8), total=len(tasks), desc="images",
                                   disable=not progress))
        else:
            loaded = [_load_item(t) for t in tqdm(tasks, desc="images", disable=not progress)]
        self.items = []
        self.records = []
        self.frames = []  # where each image's detector pixels lie in the original
        self.original_shapes = []
        for record, item in zip(records, loaded):
            if isinstance(item, str):
                log.warning("skipped: %s", item)
                continue
            self.items.append(item[:2])
            self.records.append(record)
            self.frames.append(item[2])
            self.original_shapes.append(item[3])
        self.transform = augment.transform() if augment is not None else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from torchvision import tv_tensors
        from torchvision.ops import remove_small_boxes

        pixels, boxes = self.items[index]
        image = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]
        bones = [b for b in BONES if b in boxes]
        corners = torch.tensor([boxes[b] for b in bones], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([LABELS[b] for b in bones], dtype=torch.int64)
        if self.transform is None:
            return image, {"boxes": corners, "labels": labels}
        outlines = tv_tensors.KeyPoints(box_outlines(corners), canvas_size=tuple(image.shape[-2:]))
        image, outlines = self.transform(tv_tensors.Image(image), outlines)
        corners = enclosing_boxes(outlines.as_subclass(torch.Tensor), tuple(image.shape[-2:]))
        kept = remove_small_boxes(corners, MIN_BOX_SIDE)  # indices of the boxes kept
        return image.as_subclass(torch.Tensor), {"boxes": corners[kept], "labels": labels[kept]}


def box_outlines(boxes: torch.Tensor) -> torch.Tensor:
    """``OUTLINE_POINTS`` points on the ellipse inscribed in each ``(x1, y1, x2, y2)`` box, shape (N, P, 2)."""
    angles = torch.arange(OUTLINE_POINTS, dtype=torch.float32) * (2 * math.pi / OUTLINE_POINTS)
    centres = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    radii = (boxes[:, None, 2:] - boxes[:, None, :2]) / 2
    return centres + radii * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


def enclosing_boxes(outlines: torch.Tensor, canvas: tuple[int, int]) -> torch.Tensor:
    """The box around each outline of shape (N, P, 2), clipped to the ``(height, width)`` canvas."""
    from torchvision.ops import clip_boxes_to_image

    return clip_boxes_to_image(torch.cat([outlines.amin(dim=1), outlines.amax(dim=1)], dim=1), canvas)


def collate_detections(batch):
    """Images and targets as two tuples (images differ in size), as torchvision's detectors take them."""
    return tuple(zip(*batch))


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    from torchvision.ops import box_iou as tv_box_iou

    return float(tv_box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


def boxed_records(dataset: Dataset) -> list[Record]:
    """The radiographs of ``dataset`` that carry both a radius and an ulna box."""
    return [r for r in dataset.records if all(b in r.boxes for b in BONES)]


def split_records(dataset: Dataset, seed: int, test_fraction: float,
                  val_fraction: float) -> tuple[list[Record], list[Record], list[Record]]:
    """Seeded train/validation/test split of the boxed radiographs of ``dataset``."""
    records = boxed_records(dataset)
    if len(records) < 3:
        raise ValueError(f"{dataset.root}: need at least 3 radiographs with radius and ulna boxes, "
                         f"found {len(records)}")
    order = np.random.default_rng(seed).permutation(len(records))
    n_test = max(1, round(test_fraction * len(records)))
    n_val = max(1, round(val_fraction * len(records)))
    test = [records[i] for i in order[:n_test]]
    val = [records[i] for i in order[n_test:n_test + n_val]]
    train = [records[i] for i in order[n_test + n_val:]]
    return train, val, test
