"""Stage-dependent shape of the distal radius and ulna (epiphysis, growth plate, metaphysis).

All lengths are in units of the metaphysis half-width ``W`` at the growth plate. Parameters are
piecewise-linear in the continuous stage ``s`` (``floor(s)`` is the Luk stage), so neighbouring
stages differ by degree and the stage thresholds in the descriptions sit at integer ``s``:
R3 starts where the epiphysis is half as wide as the metaphysis, R6 where it becomes wider,
R7 with the medial cap, R8 with the lateral cap, R9 with the blurred plate, R10 with the
sclerotic line, R11 with fusion; U4 with the styloid, U6 where the epiphysis is as wide as the
metaphysis, U7 with fusion in the middle half, U8 with the plate left only under the styloid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drustage.stages import Bone

# (stage value, parameter value) anchors; np.interp holds the end values beyond them.
_RADIUS: dict[str, tuple[tuple[float, float], ...]] = {
    "half_width": ((1, 0.12), (2, 0.30), (3, 0.50), (4, 0.66), (5, 0.80), (6, 0.97), (7, 1.06),
                   (8, 1.09), (9, 1.08), (10, 1.05), (12, 1.03)),
    "height": ((1, 0.14), (2, 0.20), (3, 0.27), (4, 0.33), (5, 0.38), (6, 0.42), (7, 0.45),
               (8, 0.48), (9, 0.50), (12, 0.50)),
    "gap": ((1, 0.15), (5, 0.13), (7, 0.11), (8, 0.10), (8.9, 0.08), (9.9, 0.03), (10.2, 0.0)),
    "cap_medial": ((6.6, 0.0), (7.2, 0.14), (8.0, 0.18), (9.0, 0.24), (10.0, 0.2), (11.0, 0.1), (12, 0.08)),
    "cap_lateral": ((7.6, 0.0), (8.2, 0.14), (9.0, 0.22), (10.0, 0.18), (11.0, 0.1), (12, 0.08)),
    "double_line": ((3.5, 0.0), (4.2, 0.55), (12, 0.55)),
    "proximal_line": ((4.5, 0.0), (5.2, 0.8), (6.5, 0.6), (8.5, 0.3), (9.5, 0.0)),
    "concavity": ((4.4, 0.0), (5.2, 0.07), (6.5, 0.05), (8, 0.02), (9, 0.0)),
    "openness": ((9.0, 1.0), (9.6, 0.55), (10.0, 0.0)),
    "plate_blur": ((8.8, 0.0), (9.4, 1.0), (10.0, 1.0), (10.5, 0.0)),
    "sclerotic_line": ((9.7, 0.0), (10.1, 1.0), (10.8, 1.0), (11.2, 0.18)),
    "notch": ((9.8, 0.0), (10.1, 1.0), (10.8, 1.0), (11.1, 0.0)),
    "edge_bulge": ((7.5, 0.0), (8.3, 0.35), (12, 0.35)),
    "styloid": ((1, 0.0), (12, 0.0)),
    "head_density": ((1, 1.0), (12, 1.0)),
    "fuse_middle": ((1, 0.0), (12, 0.0)),
    "fuse_lateral": ((1, 0.0), (12, 0.0)),
}
_ULNA: dict[str, tuple[tuple[float, float], ...]] = {
    "half_width": ((1, 0.14), (2, 0.30), (3, 0.50), (4, 0.66), (5, 0.80), (6, 0.96), (7, 1.01),
                   (10, 1.01)),
    "height": ((1, 0.16), (2, 0.24), (3, 0.32), (4, 0.38), (5, 0.44), (6, 0.48), (10, 0.50)),
    "gap": ((1, 0.15), (5, 0.13), (6, 0.11), (7, 0.08), (8, 0.06), (9, 0.05)),
    "cap_medial": ((1, 0.0), (10, 0.0)),
    "cap_lateral": ((1, 0.0), (10, 0.0)),
    "double_line": ((1, 0.0), (10, 0.0)),
    "proximal_line": ((1, 0.0), (10, 0.0)),
    "concavity": ((1, 0.03), (4.5, 0.03), (5.2, 0.0), (10, 0.0)),
    "openness": ((8.8, 1.0), (9.2, 0.0)),
    "plate_blur": ((6.5, 0.0), (7.2, 0.6), (9.0, 0.6), (9.3, 0.0)),
    "sclerotic_line": ((8.8, 0.0), (9.2, 0.15), (10, 0.15)),
    "notch": ((1, 0.0), (10, 0.0)),
    "edge_bulge": ((1, 0.0), (10, 0.0)),
    "styloid": ((3.6, 0.0), (4.2, 0.16), (5.0, 0.32), (6.0, 0.44), (7.0, 0.5), (10, 0.5)),
    "head_density": ((4.6, 1.0), (5.3, 1.25), (10, 1.25)),
    "fuse_middle": ((6.6, 0.0), (7.3, 1.0), (10, 1.0)),
    "fuse_lateral": ((7.6, 0.0), (8.3, 1.0), (10, 1.0)),
}
_ANCHORS: dict[Bone, dict[str, tuple[tuple[float, float], ...]]] = {"radius": _RADIUS, "ulna": _ULNA}


@dataclass(frozen=True)
class DruShape:
    """Shape parameters of one distal radius or ulna (units of the metaphysis half-width)."""

    stage_value: float  # continuous stage the shape was drawn for
    half_width: float  # epiphysis half-width
    height: float  # epiphysis height at its middle
    gap: float  # growth-plate width where open
    cap_medial: float  # depth the epiphysis wraps down the medial metaphysis corner
    cap_lateral: float
    double_line: float  # R4: palmar/dorsal double contour on the distal margin
    proximal_line: float  # R5: thickened white line along the proximal margin
    concavity: float  # R5: concave proximal margin
    openness: float  # 1 open plate, 0 fused everywhere
    plate_blur: float  # R9 sclerosing plate, U7 narrowing
    sclerotic_line: float  # R10 line where the plate was; faint scar at R11 / U9
    notch: float  # R10 notches at the ends of the sclerotic line
    edge_bulge: float  # R8: epiphysis edges taller than its middle
    styloid: float  # ulnar styloid length (U4+)
    head_density: float  # U5: ulnar head denser than the styloid
    fuse_middle: float  # U7: fusion of the middle half
    fuse_lateral: float  # U8: fusion everywhere but under the styloid
    dots: int  # R1/U1: number of ossification centres
    wobble_phase: float  # R2/U2: irregular outline
    dashed: bool  # R10: dashed sclerotic line


def dru_shape(bone: Bone, stage_value: float, rng: np.random.Generator, jitter: float = 0.03) -> DruShape:
    """Shape for a continuous stage with individual variation.

    ``jitter`` is the relative spread of each size parameter; it is what makes children of the
    same stage look different and lets neighbouring stages overlap a little.
    """
    anchors = _ANCHORS[bone]
    values = {}
    for name, points in anchors.items():
        xs, ys = zip(*points)
        value = float(np.interp(stage_value, xs, ys))
        if name in ("half_width", "height", "gap", "styloid", "cap_medial", "cap_lateral"):
            value *= 1.0 + rng.normal(0.0, jitter)
        values[name] = max(value, 0.0)
    return DruShape(
        stage_value=stage_value,
        dots=int(rng.integers(1, 4)),
        wobble_phase=float(rng.uniform(0, 2 * np.pi)),
        dashed=bool(rng.random() < 0.5),
        **values,
    )


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sqrt_pos(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(x, 0.0))


@dataclass(frozen=True)
class DruGeometry:
    """Per-child geometry not tied to stage."""

    shaft_half_width: float = 0.58  # shaft half-width, units of W
    flare: float = 1.5  # how fast the metaphysis widens toward the plate
    dome: float = 0.05  # convexity of the metaphysis end
    inclination: float = 0.0  # radial inclination: lateral side higher (radius only)
    density: float = 1.0


def metaphysis_top(u: np.ndarray, shape: DruShape, geometry: DruGeometry) -> np.ndarray:
    """Distal end of the metaphysis (v of the plate) at each u; caps round its corners."""
    top = geometry.dome * (1.0 - np.clip(u, -1, 1) ** 2) - geometry.inclination * u
    top -= 0.8 * shape.cap_medial * _smoothstep(0.55, 1.0, u)
    top -= 0.8 * shape.cap_lateral * _smoothstep(0.55, 1.0, -u)
    return top


def plate_openness(u: np.ndarray, shape: DruShape) -> np.ndarray:
    """1 where the growth plate is open, 0 where fused."""
    closed = shape.fuse_middle * (1.0 - _smoothstep(0.35, 0.6, np.abs(u)))
    closed = np.maximum(closed, shape.fuse_lateral * (1.0 - _smoothstep(0.3, 0.55, u)))
    return np.clip(shape.openness * (1.0 - closed), 0.0, 1.0)


def render_dru(u: np.ndarray, v: np.ndarray, bone: Bone, shape: DruShape, geometry: DruGeometry) -> np.ndarray:
    """Projected bone thickness (units of W) of the distal radius or ulna at local (u, v).

    ``u`` runs across the bone, +1 at the medial edge of the metaphysis; ``v`` runs along it,
    toward the hand, 0 at the growth plate.
    """
    s = shape.stage_value
    top = metaphysis_top(u, shape, geometry)
    openness = plate_openness(u, shape)

    # Metaphysis and shaft: a hollow tube whose cortex thins into cancellous bone at the plate.
    hw = geometry.shaft_half_width + (1.0 - geometry.shaft_half_width) * np.exp(np.minimum(v, 0) * geometry.flare)
    d = np.abs(u) / hw
    outer = _sqrt_pos(1.0 - d * d)
    inner = _sqrt_pos(1.0 - (d / 0.74) ** 2)
    medulla = 0.35 + 0.45 * np.exp(np.minimum(v, 0) * 2.2)
    metaphysis = hw * (outer - (1.0 - medulla) * inner)
    edge = _smoothstep(0.0, 0.025, top - v)
    metaphysis = metaphysis * edge
    # Zone of provisional calcification: a bright rim on the metaphysis side of an open plate.
    rim = np.exp(-(((top - v) / 0.03) ** 2)) * (v <= top) * (d < 1)
    metaphysis += 0.25 * rim * openness * hw

    if s < 3.0:
        epiphysis = _early_epiphysis(u, v, top, shape)
    else:
        epiphysis = _epiphysis(u, v, top, openness, bone, shape, geometry)

    thickness = metaphysis + epiphysis
    # Sclerosing plate (R9) fills the gap with blurred bone; sclerotic line and notches (R10).
    in_bone = d < 1
    if shape.sclerotic_line > 0:
        line = np.exp(-(((v - top) / 0.03) ** 2)) * in_bone
        if shape.dashed and s < 11:
            line *= 0.55 + 0.45 * (np.sin(u * 9.0 + shape.wobble_phase) > -0.2)
        thickness += 0.35 * shape.sclerotic_line * line
    if shape.notch > 0:
        for side in (-1.0, 1.0):
            thickness -= 0.35 * shape.notch * np.exp(-(((u - side * 0.97) / 0.07) ** 2 + ((v - top) / 0.06) ** 2))
    return np.maximum(thickness, 0.0) * geometry.density


def _early_epiphysis(u: np.ndarray, v: np.ndarray, top: np.ndarray, shape: DruShape) -> np.ndarray:
    """R1/U1 dot-like centres and R2/U2 irregular ovals sitting in the plate cartilage."""
    result = np.zeros_like(u)
    if shape.stage_value < 2.0:
        count = shape.dots
        radius = max(shape.half_width / count ** 0.5, 0.05)
        offsets = np.linspace(-0.35, 0.35, count) if count > 1 else np.zeros(1)
        for k, offset in enumerate(offsets):
            r = radius * (1.0 - 0.25 * (k % 2))
            cv = shape.gap + r
            q = ((u - offset) / r) ** 2 + ((v - cv) / (0.8 * r)) ** 2
            result += 1.4 * r * _sqrt_pos(1.0 - q)
        return result
    a = shape.half_width
    b = shape.height / 2
    angle = np.arctan2(v - (shape.gap + b), u)
    wobble = 1.0 + 0.12 * np.sin(3 * angle + shape.wobble_phase) + 0.06 * np.sin(5 * angle)
    q = (u / (a * wobble)) ** 2 + ((v - shape.gap - b) / (b * wobble)) ** 2
    outer = _sqrt_pos(1.0 - q)
    return 1.2 * b * (outer - 0.45 * _sqrt_pos(1.0 - q / 0.7))


def _epiphysis(u, v, top, openness, bone: Bone, shape: DruShape, geometry: DruGeometry) -> np.ndarray:
    ew = shape.half_width
    a = u / ew
    inside_x = np.abs(a) < 1.0
    lower = top + shape.gap * openness + shape.concavity * (1.0 - np.clip(a, -1, 1) ** 2)
    # Beyond the metaphysis edge the epiphysis wraps down its corner (the caps).
    lower -= shape.cap_medial * _smoothstep(0.9, 1.0 + 0.5 * (ew - 1.0) + 0.02, u)
    lower -= shape.cap_lateral * _smoothstep(0.9, 1.0 + 0.5 * (ew - 1.0) + 0.02, -u)
    profile_power = 2.0 + 2.0 * _smoothstep(5.0, 8.0, np.full_like(u, shape.stage_value))
    if 7.0 <= shape.stage_value < 8.0:  # R7: laterally hemispherical
        profile_power = np.where(u < 0, 2.0, profile_power)
    profile = _sqrt_pos(1.0 - np.abs(a) ** profile_power) ** (2.0 / profile_power)
    profile = profile * (1.0 + shape.edge_bulge * np.clip(a, -1, 1) ** 2)
    upper = top + shape.gap * openness + shape.height * profile
    upper += geometry.inclination * 0.6 * (-u)  # radial styloid side higher
    if bone == "ulna" and shape.styloid > 0:
        # Styloid: a tapering process at the medial end pointing distally.
        styl = shape.styloid * np.exp(-(((a - 0.78) / 0.17) ** 2))
        upper = upper + styl
    span = np.maximum(upper - lower, 1e-3)
    b = (v - lower) / span  # 0 at the proximal margin, 1 at the distal margin
    inside = inside_x & (b >= 0) & (b <= 1)
    c = 2.0 * b - 1.0
    # A fused plate leaves no proximal edge: the epiphysis runs into the metaphysis.
    c = np.where(c < 0, c * openness, c)
    vertical = _sqrt_pos(1.0 - c * c)
    horizontal = _sqrt_pos(1.0 - a * a)
    outer = np.sqrt(horizontal) * np.sqrt(vertical)
    inner = np.sqrt(_sqrt_pos(1.0 - (a / 0.86) ** 2)) * np.sqrt(_sqrt_pos(1.0 - (c / 0.8) ** 2))
    thickness = 0.9 * (outer - 0.4 * inner)
    if bone == "ulna":
        # The head (lateral two thirds) densifies at U5; the styloid stays thinner.
        head = 1.0 - _smoothstep(0.45, 0.8, a)
        thickness *= 0.8 + (shape.head_density - 0.8) * head
    if shape.double_line > 0:
        line_v = upper - 0.2 * span
        thickness += 0.3 * shape.double_line * np.exp(-(((v - line_v) / 0.022) ** 2)) * horizontal
    if shape.proximal_line > 0:
        medial_weight = 0.45 + 0.55 * np.clip((u + 1) / 2, 0, 1)
        thickness += 0.45 * shape.proximal_line * np.exp(-(((v - lower) / 0.028) ** 2)) * medial_weight * horizontal
    return np.where(inside, thickness, 0.0) * np.where(inside_x, 1.0, 0.0)


# Annotators of real films box the ulna's end looser than its bone, with some of its neighbours
# (the radius's edge, the carpus): a detector trained on phantoms and the project's boxed real films,
# drawing real ulna boxes at their drawn size, drew phantom ulna boxes 17% wider and 25% taller than
# the bone-tight box. Phantom ulna boxes are grown to that convention, so the detector learns one
# framing and the classifier sees phantom and real ulnae framed alike. (Radius boxes already agree.)
ULNA_BOX_GROWTH = (1.17, 1.25)  # (width, height), about the box's centre
# Annotators also draw the ulna's box about as tall as it is wide at every age (height / width
# 0.92-0.96 on the project's 768 boxed real films from 0 to 18 years), while the phantom box
# shrinks with an epiphysis not yet ossified (0.85 at U1); the detector drew phantom U1-U2 ulna
# boxes 13-15% taller than theirs, most of it proximally. A phantom ulna box is at least this tall
# for its width, grown from its distal edge.
ULNA_MIN_ASPECT = 0.95


def box_extent(bone: Bone, shape: DruShape, geometry: DruGeometry) -> tuple[float, float, float, float]:
    """(u_min, u_max, v_min, v_max) of the annotation box in units of W.

    The box holds the whole epiphysis and the flared metaphysis, as annotators draw it.
    """
    half = 1.12 * max(shape.half_width, 1.0)
    top = shape.gap + shape.height * (1.0 + shape.edge_bulge) + abs(geometry.inclination) * 1.6
    bottom = -1.25
    if bone == "radius":
        return (-half, half, bottom, top + 0.12)
    top = max(top, shape.gap + shape.styloid + 0.4 * shape.height) + 0.12
    centre, half_height = (top + bottom) / 2, (top - bottom) / 2 * ULNA_BOX_GROWTH[1]
    half *= ULNA_BOX_GROWTH[0]
    distal = centre + half_height
    return (-half, half, distal - 2 * max(half_height, ULNA_MIN_ASPECT * half), distal)
