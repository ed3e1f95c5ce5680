"""Classifier crops: a DRU box grown to the 4:3 (height:width) input shape and resized.

Left hands are mirrored so every crop shows the orientation of a right hand seen
postero-anteriorly (radius on the left of the crop, ulna on the right).
"""

from __future__ import annotations

import logging
import zlib

import numpy as np

log = logging.getLogger(__name__)

CROP_SIZE: tuple[int, int] = (128, 96)  # (height, width), the paper's classifier input
CROP_MARGIN = 0.08  # fraction of the box added on each side before growing to 4:3


def crop_window(box: tuple[float, float, float, float], size: tuple[int, int] = CROP_SIZE,
                margin: float = CROP_MARGIN) -> tuple[float, float, float, float]:
    """The ``[x1, y1, x2, y2]`` window cut for a box: box plus margin, grown to the crop's aspect.

    The box is only ever grown, never squeezed, so the crop keeps the bone's proportions.
    """
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box {box} has no area; expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * (1 + 2 * margin), (y2 - y1) * (1 + 2 * margin)
    aspect = size[0] / size[1]
    if h / w < aspect:
        h = w * aspect
    else:
        w = h / aspect
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def crop_region(image: np.ndarray, box: tuple[float, float, float, float], mirror: bool,
                size: tuple[int, int] = CROP_SIZE, margin: float = CROP_MARGIN) -> np.ndarray:
    """Cut ``box`` (pixels, ``[x1, y1, x2, y2]``) from a float image and resize to ``size``.

    Parts of the window outside the image are filled with the nearest edge pixels. Resizing is
    antialiased (Pillow's area-aware bilinear filter). Returns float32 (H, W) in the input range.
    """
    from PIL import Image

    wx1, wy1, wx2, wy2 = crop_window(box, size, margin)
    h, w = image.shape
    c0, r0 = int(np.floor(wx1)), int(np.floor(wy1))
    c1, r1 = int(np.ceil(wx2)), int(np.ceil(wy2))
    rows = np.clip(np.arange(r0, r1), 0, h - 1)
    cols = np.clip(np.arange(c0, c1), 0, w - 1)
    window = image[np.ix_(rows, cols)].astype(np.float32)
    # Sub-pixel placement of the exact window inside the integer cut.
    pil = Image.fromarray(window, mode="F")
    resized = pil.resize((size[1], size[0]), Image.Resampling.BILINEAR,
                         box=(wx1 - c0, wy1 - r0, wx2 - c0, wy2 - r0))
    crop = np.array(resized, dtype=np.float32)
    return crop[:, ::-1].copy() if mirror else crop


def needs_mirror(laterality: str | None) -> bool:
    """Left hands are mirrored to the right-hand orientation; unknown sides are left as they are."""
    return laterality == "L"


# Training crops keep some context around the standard window so translation and scaling
# augmentation can move the window without running out of image.
CONTEXT = 1.25
CONTEXT_SIZE = (160, 120)


def context_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The standard crop window of ``box`` enlarged ``CONTEXT`` times about its centre."""
    x1, y1, x2, y2 = crop_window(box)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2 * CONTEXT, (y2 - y1) / 2 * CONTEXT
    return cx - hw, cy - hh, cx + hw, cy + hh


def context_crop(image: np.ndarray, box: tuple[float, float, float, float], mirror: bool) -> np.ndarray:
    return crop_region(image, context_box(box), mirror, size=CONTEXT_SIZE, margin=0.0)


# Off-bone boxes: a bone's box moved this many box sizes away (uniformly within the range, in a
# random direction), inside the image and overlapping neither bone's box.
OFF_BONE_DISTANCE = (1.5, 3.0)
OFF_BONE_TRIES = 20


def off_bone_boxes(boxes: dict, width: int, height: int, rng: np.random.Generator) -> dict:
    """Each box of ``boxes`` moved off the bones: the same size, ``OFF_BONE_DISTANCE`` box sizes
    away, inside the image and clear of every box given; a bone with no such place after
    ``OFF_BONE_TRIES`` draws is left out. What a detector's box shows when it lands on soft tissue,
    a finger, a marker or the background."""
    from drustage.data.detection import box_iou

    moved = {}
    for bone, (x1, y1, x2, y2) in boxes.items():
        w, h = x2 - x1, y2 - y1
        for _ in range(OFF_BONE_TRIES):
            angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(*OFF_BONE_DISTANCE)
            cx = (x1 + x2) / 2 + np.cos(angle) * distance * w
            cy = (y1 + y2) / 2 + np.sin(angle) * distance * h
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
            if inside and not any(box_iou(box, b) > 0 for b in boxes.values()):
                moved[bone] = tuple(float(v) for v in box)
                break
    return moved


def _crops_of_record(task) -> tuple[str, dict[str, np.ndarray] | str]:
    from drustage.imaging import load_radiograph

    path, image_id, boxes, laterality, off_bone_seed = task
    try:
        image = load_radiograph(path).image
    except ValueError as error:
        return image_id, str(error)
    if off_bone_seed is not None:
        rng = np.random.default_rng([off_bone_seed, zlib.crc32(image_id.encode())])
        boxes = off_bone_boxes(boxes, image.shape[1], image.shape[0], rng)
    return image_id, {bone: context_crop(image, box, needs_mirror(laterality)) for bone, box in boxes.items()}


def extract_context_crops(dataset, workers: int = 1, progress: bool = True, cache: bool = True,
                          off_bone_seed: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Context crops of every boxed bone of a dataset: ``{image_id: {bone: (160, 120) array}}``;
    with ``off_bone_seed``, of each box moved off the bones instead (``off_bone_boxes``, drawn
    from the seed and the image id, so the same every time).

    Cached in ``DATASET/cache/`` keyed by the records' labels, so experiments reuse them.
    Unreadable images are reported (one line each) and skipped.
    """
    import hashlib
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from drustage.io_utils import atomic_path

    # the records, not labels.csv: a dataset narrowed with ``with_records`` gets a cache of its own
    labels = repr([r.to_row() for r in dataset.records]).encode()
    settings = (CONTEXT, CONTEXT_SIZE, CROP_SIZE, CROP_MARGIN, off_bone_seed, OFF_BONE_DISTANCE)
    key = hashlib.sha1(labels + repr(settings).encode()).hexdigest()[:16]
    cache_path = dataset.root / "cache" / f"crops-{key}.npz"
    if cache and cache_path.is_file():
        with np.load(cache_path) as stored:
            result: dict[str, dict[str, np.ndarray]] = {}
            for name in stored.files:
                image_id, bone = name.rsplit("/", 1)
                result.setdefault(image_id, {})[bone] = stored[name]
            return result
    tasks = [(dataset.path_of(r), r.image_id, r.boxes, r.laterality, off_bone_seed) for r in dataset.records if r.boxes]
    result = {}
    bar = tqdm(total=len(tasks), desc="crops", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            outputs = list(_tracked(pool.map(_crops_of_record, tasks, chunksize=8), bar))
    else:
        outputs = list(_tracked(map(_crops_of_record, tasks), bar))
    bar.close()
    for image_id, crops in outputs:
        if isinstance(crops, str):
            log.warning("skipped: %s", crops)
            continue
        result[image_id] = crops
    if cache:
        flat = {f"{image_id}/{bone}": crop for image_id, crops in result.items() for bone, crop in crops.items()}
        with atomic_path(cache_path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **flat)
    return result


def _tracked(iterable, bar):
    for item in iterable:
        bar.update()
        yield item
