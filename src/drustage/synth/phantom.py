"""Whole-hand phantom radiographs: hand, carpus and distal forearm, with exact DRU boxes.

The anatomy lives in a canonical frame: a left hand seen postero-anteriorly, millimetres, origin
at the wrist, x toward the thumb, y toward the fingers. A ``Pose`` maps it to pixels (scale,
rotation, position, mirroring for right hands); every primitive is rasterised only inside its
own pixel bounding box by mapping pixel centres back to the canonical frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from drustage.stages import Bone
from drustage.synth.maturity import Subject, bone_age_of
from drustage.synth.morphology import DruGeometry, DruShape, box_extent, dru_shape, render_dru

# Relative spread of morphology that is not the stage itself, and the stage-value noise of the
# drawn shape: together they make neighbouring stages overlap a little, as in real readings.
SHAPE_JITTER = 0.03
STAGE_NOISE = 0.08


@dataclass(frozen=True)
class Pose:
    """Canonical millimetres -> image pixels (y down). ``mirror`` turns a left hand into a right."""

    width: int
    height: int
    center: tuple[float, float]  # pixel position of the canonical origin (before mirroring)
    pixels_per_mm: float
    angle: float  # radians, counter-clockwise on screen
    mirror: bool

    def to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = x * self.pixels_per_mm, -y * self.pixels_per_mm
        c, s = math.cos(self.angle), math.sin(self.angle)
        px = self.center[0] + a * c + b * s
        py = self.center[1] - a * s + b * c
        if self.mirror:
            px = self.width - 1 - px
        return px, py

    def to_canonical(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.mirror:
            px = self.width - 1 - px
        a, b = px - self.center[0], py - self.center[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        x = (a * c - b * s) / self.pixels_per_mm
        y = -(a * s + b * c) / self.pixels_per_mm
        return x, y

    def pixel_box(self, x0: float, x1: float, y0: float, y1: float) -> tuple[float, float, float, float]:
        """Axis-aligned pixel box around a canonical rectangle, ``[x1, y1, x2, y2]``."""
        xs = np.array([x0, x1, x1, x0], dtype=float)
        ys = np.array([y0, y0, y1, y1], dtype=float)
        px, py = self.to_pixel(xs, ys)
        return float(px.min()), float(py.min()), float(px.max()), float(py.max())


Density = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _rasterise(canvas: np.ndarray, pose: Pose, bounds: tuple[float, float, float, float], density: Density) -> None:
    """Add ``density(x, y)`` (canonical mm) to ``canvas`` inside the pixel box of ``bounds``."""
    x1, y1, x2, y2 = pose.pixel_box(*bounds)
    h, w = canvas.shape
    c0, c1 = max(int(x1) - 1, 0), min(int(math.ceil(x2)) + 2, w)
    r0, r1 = max(int(y1) - 1, 0), min(int(math.ceil(y2)) + 2, h)
    if c0 >= c1 or r0 >= r1:
        return
    cols = np.arange(c0, c1, dtype=np.float32)
    rows = np.arange(r0, r1, dtype=np.float32)
    px, py = np.meshgrid(cols, rows)
    x, y = pose.to_canonical(px, py)
    canvas[r0:r1, c0:c1] += density(x, y).astype(np.float32)


def _segment_coords(x, y, p0, p1):
    """Position along (t in mm from p0) and distance across a segment p0 -> p1."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    rx, ry = x - p0[0], y - p0[1]
    along = rx * ux + ry * uy
    across = -rx * uy + ry * ux
    return along, across, length


def long_bone(p0, p1, base_r: float, mid_r: float, head_r: float) -> tuple[tuple, Density]:
    """Tubular bone from base ``p0`` to head ``p1`` (mm): cortex, medulla, rounded ends."""

    def density(x, y):
        along, across, length = _segment_coords(x, y, p0, p1)
        t = along / length
        end = np.minimum(np.clip(t, 0, 1), 1 - np.clip(t, 0, 1)) * length
        radius = mid_r + (base_r - mid_r) * np.exp(-np.clip(t, 0, 1) * length / (1.2 * base_r)) \
            + (head_r - mid_r) * np.exp(-(1 - np.clip(t, 0, 1)) * length / (1.2 * head_r))
        beyond = np.maximum(-along, along - length)
        q = (across / radius) ** 2 + (np.maximum(beyond, 0) / (0.55 * radius)) ** 2
        outer = np.sqrt(np.maximum(1 - q, 0))
        inner = np.sqrt(np.maximum(1 - q / 0.6, 0))
        medulla = 0.4 + 0.5 * np.exp(-end / (1.5 * radius))
        return 2 * radius * (outer - (1 - medulla) * inner)

    pad = max(base_r, head_r) * 1.2
    bounds = (min(p0[0], p1[0]) - pad, max(p0[0], p1[0]) + pad, min(p0[1], p1[1]) - pad, max(p0[1], p1[1]) + pad)
    return bounds, density


def ellipsoid(center, a: float, b: float, angle_deg: float, depth: float) -> tuple[tuple, Density]:
    """Projected ellipsoid with a brighter cortical rim (carpals, small epiphyses)."""
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)

    def density(x, y):
        dx, dy = x - center[0], y - center[1]
        u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
        q = u * u + v * v
        return depth * (np.sqrt(np.maximum(1 - q, 0)) - 0.45 * np.sqrt(np.maximum(1 - q / 0.72, 0)))

    r = max(a, b) * 1.05
    return (center[0] - r, center[0] + r, center[1] - r, center[1] + r), density


def capsule_thickness(x, y, p0, p1, radius: float) -> np.ndarray:
    along, across, length = _segment_coords(x, y, p0, p1)
    beyond = np.maximum(np.maximum(-along, along - length), 0)
    d2 = across ** 2 + beyond ** 2
    return 2 * np.sqrt(np.maximum(radius * radius - d2, 0))


@dataclass(frozen=True)
class DruPlacement:
    bone: Bone
    center_x: float  # mm, canonical
    plate_y: float  # mm, canonical
    half_width: float  # W, mm
    shape: DruShape
    geometry: DruGeometry

    def local(self, x, y):
        # u = +1 at the medial edge: medial is toward -x (the little-finger side) for both bones.
        return (self.center_x - x) / self.half_width, (y - self.plate_y) / self.half_width

    def canonical_box(self) -> tuple[float, float, float, float]:
        u0, u1, v0, v1 = box_extent(self.bone, self.shape, self.geometry)
        xs = (self.center_x - u1 * self.half_width, self.center_x - u0 * self.half_width)
        return xs[0], xs[1], self.plate_y + v0 * self.half_width, self.plate_y + v1 * self.half_width


@dataclass
class Phantom:
    image: np.ndarray  # float32 (H, W) in [0, 1]
    boxes: dict[str, tuple[float, float, float, float]]  # bone -> [x1, y1, x2, y2] pixels
    laterality: str  # "L" or "R"
    subject: Subject
    pixel_spacing_mm: float


def _age_size(age: float) -> float:
    return float(np.interp(age, [2, 6, 10, 13, 16, 19], [0.58, 0.7, 0.82, 0.92, 1.0, 1.02]))


def _fingers(rng: np.random.Generator, size: float, maturity: float):
    """Metacarpal and phalanx segments (canonical mm), their epiphyses, and each ray's
    soft-tissue axis ``(start, end, radius)``."""
    spread = rng.uniform(0.5, 1.6)
    bones, epiphyses, rays_soft = [], [], []
    fused = maturity > 15.5
    # (base x, base y, metacarpal length, phalanx lengths, ray angle deg, shaft radius)
    rays = [
        (13.0, 38, 62, (40, 24, 18), 9, 6.0),
        (2.0, 39, 60, (44, 28, 19), 0, 6.2),
        (-10.0, 37, 54, (41, 27, 18), -8, 5.6),
        (-20.0, 34, 48, (33, 20, 17), -17, 5.1),
    ]
    gap = 1.2 + 2.2 * max(0.0, 1.0 - maturity / 14.0)
    for bx, by, mc_len, phal, angle, r in rays:
        ang_mc = math.radians(angle * 0.9 + rng.normal(0, 1.5))
        ang_f = math.radians(angle * 0.9 + angle * 0.7 * spread + rng.normal(0, 3))
        p0 = np.array([bx, by]) * size
        p1 = p0 + mc_len * size * np.array([math.sin(ang_mc), math.cos(ang_mc)])
        bones.append((tuple(p0), tuple(p1), r * 1.1 * size, r * 0.72 * size, r * 1.1 * size))
        if not fused:
            epiphyses.append((tuple(p1 + gap * 0.3 * size * np.array([math.sin(ang_mc), math.cos(ang_mc)])),
                              r * 1.0 * size, r * 0.9 * size, math.degrees(-ang_mc)))
        direction = np.array([math.sin(ang_f), math.cos(ang_f)])
        start = p1 + gap * size * direction
        for k, length in enumerate(phal):
            q0 = start
            q1 = q0 + length * size * direction
            scale = (1.0, 0.88, 0.78)[k]
            bones.append((tuple(q0), tuple(q1), r * 1.05 * scale * size, r * 0.75 * scale * size,
                          r * (0.9 if k < 2 else 0.6) * scale * size))
            if not fused and maturity > 2:
                epiphyses.append((tuple(q0 - 0.5 * gap * size * direction), r * 1.0 * scale * size,
                                  r * 0.45 * scale * size, math.degrees(-ang_f)))
            start = q1 + gap * size * direction
        rays_soft.append((tuple(p0), tuple(p1), r * 2.6 * size))
        rays_soft.append((tuple(p1), tuple(start - 2.0 * size * direction), r * 1.75 * size))
    # Thumb: metacarpal from the trapezium, abducted.
    thumb = math.radians(rng.uniform(28, 55))
    t0 = np.array([24.0, 29.0]) * size
    direction = np.array([math.sin(thumb), math.cos(thumb)])
    for k, (length, r) in enumerate(((42, 6.0), (31, 5.6), (22, 5.0))):
        t1 = t0 + length * size * direction
        bones.append((tuple(t0), tuple(t1), r * 1.1 * size, r * 0.75 * size, r * (1.0 if k < 2 else 0.65) * size))
        if not fused and maturity > 2:
            epiphyses.append((tuple(t0 - 0.5 * gap * size * direction), r * 0.95 * size, r * 0.45 * size,
                              math.degrees(-thumb)))
        rays_soft.append((tuple(t0), tuple(t1 + (gap if k == 2 else 0) * size * direction), r * 2.0 * size))
        t0 = t1 + gap * size * direction
        if k == 0:
            thumb += math.radians(rng.uniform(-10, 5))
            direction = np.array([math.sin(thumb), math.cos(thumb)])
    return bones, epiphyses, rays_soft


# Carpal bones: (name, x, y, a, b, angle, onset bone age in years)
_CARPALS = (
    ("capitate", 1.0, 24, 9.0, 12.0, 5, 0.2),
    ("hamate", -11.5, 23, 8.5, 10.5, -15, 0.3),
    ("triquetrum", -14.0, 11, 8.0, 6.0, 20, 2.5),
    ("lunate", -1.5, 9.5, 8.5, 7.0, 0, 3.5),
    ("trapezium", 20.0, 25, 8.0, 8.0, 30, 5.0),
    ("trapezoid", 11.5, 27, 6.5, 7.0, 10, 5.5),
    ("scaphoid", 13.0, 11, 10.5, 6.5, 35, 5.5),
    ("pisiform", -16.5, 14, 5.0, 5.0, 0, 10.0),
)


def render_phantom(subject: Subject, rng: np.random.Generator, image_scale: float = 1.0,
                   variety: str = "standard", tilt_deg: float = 6.0) -> Phantom:
    """Draw one radiograph of ``subject``. Deterministic for a given generator state.

    ``variety`` "wide" adds the film types real archives hold and standard phantoms lack (small
    hands inside scanned film frames, wrist-only views, dark and flat exposures); "standard"
    draws exactly what it always has. ``tilt_deg`` is the standard deviation of the forearm's
    angle to the film's vertical axis (real films reach 30 degrees and more)."""
    maturity = bone_age_of(subject)
    size = _age_size(subject.age_years) * rng.normal(1.0, 0.04)
    height = int(rng.uniform(1000, 1800) * image_scale)
    width = int(height * rng.uniform(0.72, 0.95))
    width = int(np.clip(width, 900 * image_scale, 1500 * image_scale))
    laterality = "L" if rng.random() < 0.7 else "R"

    # Fingertip near the top, wrist at 70-86% of the height.
    wrist_row = height * rng.uniform(0.7, 0.88)
    tip_row = height * rng.uniform(0.04, 0.22)
    hand_length = 185.0 * size
    ppm = (wrist_row - tip_row) / hand_length
    ppm = min(ppm, 0.85 * width / (140.0 * size))
    pose = Pose(width, height, (width * rng.uniform(0.42, 0.58), wrist_row), ppm,
                math.radians(rng.normal(0, tilt_deg)), mirror=laterality == "R")

    bone = np.zeros((height, width), np.float32)
    fingers, finger_epiphyses, rays_soft = _fingers(rng, size, maturity)
    for p0, p1, rb, rm, rh in fingers:
        _rasterise(bone, pose, *long_bone(p0, p1, rb, rm, rh))
    for center, a, b, angle in finger_epiphyses:
        _rasterise(bone, pose, *ellipsoid(center, a, b, angle, depth=0.9 * b))
    for _, cx, cy, a, b, angle, onset in _CARPALS:
        if maturity > onset:
            growth = min(1.0, 0.25 + (maturity - onset) / 7.0) ** 0.8
            _rasterise(bone, pose, *ellipsoid((cx * size, (cy + 2.0) * size), a * growth * size, b * growth * size,
                                              angle + rng.normal(0, 4), depth=1.2 * min(a, b) * growth * size))

    drus = _place_dru(subject, rng, size)
    for placement in drus.values():
        x0, x1, _, y1 = placement.canonical_box()
        bounds = (x0 - 2, x1 + 2, -260.0, y1 + 2)

        def density(x, y, placement=placement):
            u, v = placement.local(x, y)
            return placement.half_width * render_dru(u, v, placement.bone, placement.shape, placement.geometry)

        _rasterise(bone, pose, bounds, density)

    soft = _soft_tissue(pose, size, rays_soft, rng)
    image = _expose(bone, soft, rng, ppm)
    boxes = {name: pose.pixel_box(*placement.canonical_box()) for name, placement in drus.items()}
    if variety == "wide":
        image, boxes, ppm = _film_variety(image, boxes, ppm, wrist_row, rng)
    image = _add_markers(image, laterality, rng)
    height, width = image.shape
    boxes = {name: (max(x1, 0.0), max(y1, 0.0), min(x2, width - 1.0), min(y2, height - 1.0))
             for name, (x1, y1, x2, y2) in boxes.items()}
    return Phantom(image, boxes, laterality, subject, pixel_spacing_mm=1.0 / ppm)


Boxes = dict[str, tuple[float, float, float, float]]


def _film_variety(image: np.ndarray, boxes: Boxes, ppm: float, wrist_row: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, Boxes, float]:
    """One of: a wrist-only view (10%), a small hand on a scanned film board (20%), or the
    radiograph as is (70%); then a dark or flat exposure (25%)."""
    from PIL import Image

    h, w = image.shape
    kind = rng.choice(["wrist", "small", "plain"], p=[0.1, 0.2, 0.7])
    if kind == "wrist":
        top = int(np.clip(wrist_row - rng.uniform(0.2, 0.35) * h, 0, h - 2))
        left, right = int(rng.uniform(0.0, 0.2) * w), w - int(rng.uniform(0.0, 0.2) * w)
        image = image[top:, left:right]
        boxes = {k: (x1 - left, y1 - top, x2 - left, y2 - top) for k, (x1, y1, x2, y2) in boxes.items()}
    elif kind == "small":
        factor = rng.uniform(0.4, 0.7)
        small = np.asarray(Image.fromarray(image).resize((max(1, round(w * factor)), max(1, round(h * factor))),
                                                         Image.Resampling.BILINEAR))
        board = np.full((h, w), rng.uniform(0.05, 0.7), np.float32) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
        top = int(rng.uniform(0.05, 1.0 - factor - 0.02) * h)
        left = int(rng.uniform(0.05, 1.0 - factor - 0.02) * w)
        rim = int(rng.uniform(0.005, 0.03) * w)  # the film's own edge around the exposed field
        board[max(top - rim, 0):top + small.shape[0] + rim, max(left - rim, 0):left + small.shape[1] + rim] = \
            rng.uniform(0.0, 0.15)
        board[top:top + small.shape[0], left:left + small.shape[1]] = small
        image = board
        boxes = {k: (x1 * factor + left, y1 * factor + top, x2 * factor + left, y2 * factor + top)
                 for k, (x1, y1, x2, y2) in boxes.items()}
        ppm *= factor
    if rng.random() < 0.25:
        low, span = rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.6)
        image = low + span * np.clip(image, 0, 1) ** rng.uniform(1.2, 2.5)
    return np.clip(image, 0, 1).astype(np.float32), boxes, ppm


def _place_dru(subject: Subject, rng: np.random.Generator, size: float) -> dict[str, DruPlacement]:
    result = {}
    for bone, maturity, center_x, plate_y, half_width in (
        ("radius", subject.radius_maturity, 13.0, -2.0, 12.5),
        ("ulna", subject.ulna_maturity, -12.5, -5.0, 8.2),
    ):
        drawn = float(np.clip(maturity + rng.normal(0, STAGE_NOISE), 1.0, 12.0))
        shape = dru_shape(bone, drawn, rng, jitter=SHAPE_JITTER)
        geometry = DruGeometry(
            shaft_half_width=rng.uniform(0.52, 0.62) if bone == "radius" else rng.uniform(0.6, 0.7),
            flare=rng.uniform(1.2, 1.9),
            dome=rng.uniform(0.0, 0.08),
            inclination=rng.uniform(0.06, 0.14) if bone == "radius" else rng.uniform(-0.03, 0.03),
            density=rng.uniform(0.9, 1.1),
        )
        # Young children's epiphyses sit lower relative to the carpus; keep the joint spacing.
        result[bone] = DruPlacement(bone, center_x * size, plate_y * size, half_width * size * rng.normal(1, 0.04),
                                    shape, geometry)
    return result


def _soft_tissue(pose: Pose, size: float, rays_soft, rng: np.random.Generator) -> np.ndarray:
    """Soft-tissue thickness (mm) rendered at quarter resolution, it is smooth."""
    step = 4
    h, w = (pose.height + step - 1) // step, (pose.width + step - 1) // step
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32) * step, np.arange(w, dtype=np.float32) * step,
                             indexing="ij")
    x, y = pose.to_canonical(cols, rows)
    fat = rng.uniform(0.9, 1.15)
    tissue = capsule_thickness(x, y, (0, -400), (0, 12 * size), 34 * size * fat)
    tissue = np.maximum(tissue, capsule_thickness(x, y, (-2 * size, 15 * size), (0, 35 * size), 36 * size * fat))
    for start, end, radius in rays_soft:
        tissue = np.maximum(tissue, capsule_thickness(x, y, start, end, radius * fat))
    full = ndimage.zoom(tissue, step, order=1)[: pose.height, : pose.width]
    return np.pad(full, ((0, pose.height - full.shape[0]), (0, pose.width - full.shape[1])), mode="edge")


def _expose(bone_mm: np.ndarray, soft_mm: np.ndarray, rng: np.random.Generator, ppm: float) -> np.ndarray:
    """Attenuation to display intensity, with texture, exposure, blur, noise and collimation."""
    h, w = bone_mm.shape
    texture = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 1.2)
    texture /= texture.std() + 1e-6
    bone = bone_mm * (1.0 + 0.09 * texture)
    mu_bone = rng.uniform(0.045, 0.08)
    mu_soft = rng.uniform(0.006, 0.012)
    attenuation = mu_soft * soft_mm + mu_bone * bone
    background = rng.choice([rng.uniform(0.03, 0.2), rng.uniform(0.2, 0.45)], p=[0.7, 0.3])
    image = background + (1 - background) * (1 - np.exp(-attenuation))
    # Heel effect: exposure varies smoothly across the detector.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gradient = rng.normal(0, 0.04) * (xx / w - 0.5) + rng.normal(0, 0.04) * (yy / h - 0.5)
    image = image * (1 + gradient)
    image = np.clip(image, 0, 1) ** rng.uniform(0.75, 1.35)
    image = ndimage.gaussian_filter(image, rng.uniform(0.5, 1.4))
    noise = rng.uniform(0.006, 0.025)
    image = image + noise * np.sqrt(np.clip(image, 0.05, 1)) * rng.standard_normal((h, w)).astype(np.float32)
    # Collimation: one or two edges covered by the shutter (bright) or cut off (dark).
    for _ in range(int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2]))):
        side = int(rng.integers(4))
        extent = int(rng.uniform(0.01, 0.07) * (w if side < 2 else h))
        level = rng.uniform(0.8, 1.0) if rng.random() < 0.7 else rng.uniform(0.0, 0.05)
        region = (slice(None), slice(0, extent)) if side == 0 else (slice(None), slice(w - extent, w)) \
            if side == 1 else (slice(0, extent), slice(None)) if side == 2 else (slice(h - extent, h), slice(None))
        image[region] = level + rng.normal(0, 0.01, image[region].shape)
    if rng.random() < 0.25:
        # A scanned film: the radiograph sits on a lighter or darker board with a border.
        top, left = int(rng.uniform(0.02, 0.1) * h), int(rng.uniform(0.02, 0.1) * w)
        bottom, right = h - int(rng.uniform(0.0, 0.06) * h), w - int(rng.uniform(0.02, 0.1) * w)
        board = rng.uniform(0.1, 0.6)
        outside = np.ones((h, w), bool)
        outside[top:bottom, left:right] = False
        image[outside] = board + rng.normal(0, 0.01, int(outside.sum()))
    return np.clip(image, 0, 1).astype(np.float32)


def _add_markers(image: np.ndarray, laterality: str, rng: np.random.Generator) -> np.ndarray:
    """Burned-in lead markers: the side letter and sometimes initials or a date stamp."""
    from PIL import Image, ImageDraw, ImageFont

    if rng.random() > 0.85:
        return image
    h, w = image.shape
    texts = [laterality if rng.random() < 0.95 else ("L" if laterality == "R" else "R")]
    if rng.random() < 0.5:
        texts.append("".join(chr(int(c)) for c in rng.integers(65, 91, size=int(rng.integers(2, 4)))))
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(int(h * rng.uniform(0.035, 0.07)), 10))
    corner = (int(w * rng.uniform(0.03, 0.2)), int(h * rng.uniform(0.02, 0.6)))
    if rng.random() < 0.5:
        corner = (int(w * rng.uniform(0.65, 0.85)), corner[1])
    text = "\n".join(texts)
    plate = None
    if rng.random() < 0.5:
        # Lead letters on a plastic plate: the plate shows as a dark rounded rectangle.
        x1, y1, x2, y2 = draw.multiline_textbbox(corner, text, font=font)
        pad = font.size // 4
        plate = Image.new("L", (w, h), 0)
        ImageDraw.Draw(plate).rounded_rectangle((x1 - pad, y1 - pad, x2 + pad, y2 + pad), radius=pad, fill=255)
    draw.multiline_text(corner, text, fill=255, font=font)
    mask = np.asarray(layer, np.float32) / 255.0
    if plate is not None:
        plate_mask = np.asarray(plate, np.float32) / 255.0
        image = image * (1 - plate_mask) + plate_mask * rng.uniform(0.0, 0.12)
    level = rng.uniform(0.9, 1.0)
    return np.maximum(image * (1 - mask), mask * level).astype(np.float32)
