"""Classifier crops: a DRU box grown to the 4:3 (height:width) input shape and resized.

Left hands are mirrored so every crop shows the orientation of a right hand seen
postero-anteriorly (radius on the left of the crop, ulna on the right).
"""

from __future__ import annotations

import numpy as np

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
    crop = np.asarray(resized, dtype=np.float32)
    return crop[:, ::-1].copy() if mirror else crop


def needs_mirror(laterality: str | None) -> bool:
    """Left hands are mirrored to the right-hand orientation; unknown sides are left as they are."""
    return laterality == "L"
