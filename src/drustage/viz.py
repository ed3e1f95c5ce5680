"""Pictures people look at: stage contact sheets, phantom-vs-real sheets, box overlays."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

import numpy as np

from drustage.data.crops import CROP_SIZE, crop_region, needs_mirror
from drustage.data.layout import Dataset
from drustage.imaging import RadiographError, load_radiograph, to_uint8
from drustage.io_utils import save_png
from drustage.stages import BONES, all_stages

if TYPE_CHECKING:
    from drustage.pipeline import StageReport

BOX_COLOURS = {"radius": (230, 60, 60), "ulna": (60, 140, 230)}


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _label_column(texts: list[str], height: int, width: int):
    from PIL import Image, ImageDraw

    column = Image.new("L", (width, height * len(texts)), 0)
    draw = ImageDraw.Draw(column)
    for i, text in enumerate(texts):
        draw.text((6, i * height + height // 2 - 10), text, fill=255, font=_font(18))
    return column


def stage_contact_sheet(dataset: Dataset, out: str | Path, per_stage: int = 8) -> Path:
    """Radius and ulna crops, one row per stage (R1..R11, U1..U9), as the classifier sees them."""
    from PIL import Image

    h, w = CROP_SIZE
    rows, labels = [], []
    cache: dict[str, np.ndarray] = {}
    for bone in BONES:
        for stage in all_stages(bone):
            chosen = [r for r in dataset.records if r.stages.get(bone) == stage and bone in r.boxes][:per_stage]
            row = np.zeros((h, w * per_stage), np.uint8)
            for k, record in enumerate(chosen):
                if record.image_id not in cache:
                    cache[record.image_id] = load_radiograph(dataset.path_of(record)).image
                crop = crop_region(cache[record.image_id], record.boxes[bone], needs_mirror(record.laterality))
                row[:, k * w:(k + 1) * w] = to_uint8(crop)
            rows.append(row)
            labels.append(f"{stage.code} ({len(chosen)})")
    grid = Image.fromarray(np.concatenate(rows, 0))
    sheet = Image.new("L", (grid.width + 90, grid.height), 0)
    sheet.paste(_label_column(labels, h, 90), (0, 0))
    sheet.paste(grid, (90, 0))
    out = Path(out)
    save_png(out, np.asarray(sheet))
    return out


def _thumbnail(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(to_uint8(image))
    width = max(1, round(pil.width * height / pil.height))
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))


def _panel(paths: list[Path], title: str, columns: int, thumb_height: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    thumbs = []
    for path in paths:
        try:
            thumbs.append(_thumbnail(load_radiograph(path).image, thumb_height))
        except RadiographError:
            continue
    cell_w = int(thumb_height * 0.85)
    rows = max(1, -(-len(thumbs) // columns))
    panel = Image.new("L", (cell_w * columns, thumb_height * rows + 36), 30)
    for i, thumb in enumerate(thumbs):
        t = Image.fromarray(thumb)
        if t.width > cell_w:
            t = t.crop(((t.width - cell_w) // 2, 0, (t.width - cell_w) // 2 + cell_w, thumb_height))
        panel.paste(t, ((i % columns) * cell_w + (cell_w - t.width) // 2, 36 + (i // columns) * thumb_height))
    ImageDraw.Draw(panel).text((8, 6), title, fill=255, font=_font(24))
    return np.asarray(panel)


def side_by_side_sheet(phantoms: list[Path], real: list[Path], out: str | Path, columns: int = 4,
                       thumb_height: int = 260) -> Path:
    """Phantom radiographs (left) beside real ones (right), same thumbnail size and windowing."""
    left = _panel(phantoms, f"phantoms ({len(phantoms)})", columns, thumb_height)
    right = _panel(real, f"real ({len(real)})", columns, thumb_height)
    height = max(left.shape[0], right.shape[0])
    pad = lambda a: np.pad(a, ((0, height - a.shape[0]), (0, 0)))  # noqa: E731
    sheet = np.concatenate([pad(left), np.full((height, 12), 255, np.uint8), pad(right)], 1)
    out = Path(out)
    save_png(out, sheet)
    return out


def detection_sheet(panels, out: str | Path, columns: int = 6, cell: int = 256) -> Path:
    """Zoomed wrist views: predicted boxes (radius red, ulna blue, with scores) and, where known,
    the true boxes in green. ``panels`` holds ``(image, detections, truth_or_None, title)``."""
    from PIL import Image, ImageDraw

    rows = max(1, -(-len(panels) // columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), (20, 20, 20))
    font = _font(14)
    for index, (image, found, truth, title) in enumerate(panels):
        boxes = [d.box for d in found.values() if d.box is not None] + list((truth or {}).values())
        h, w = image.shape
        if boxes:
            x1 = min(b[0] for b in boxes); y1 = min(b[1] for b in boxes)  # noqa: E702
            x2 = max(b[2] for b in boxes); y2 = max(b[3] for b in boxes)  # noqa: E702
            side = max(x2 - x1, y2 - y1) * 1.6
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            view = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        else:
            view = (0, 0, w, h)
        zoom = cell / (view[2] - view[0])
        pil = Image.fromarray(to_uint8(image)).convert("RGB").crop(tuple(int(v) for v in view))
        pil = pil.resize((cell, cell), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(pil)
        shift = lambda b: [(b[0] - int(view[0])) * zoom, (b[1] - int(view[1])) * zoom,  # noqa: E731
                           (b[2] - int(view[0])) * zoom, (b[3] - int(view[1])) * zoom]
        for box in (truth or {}).values():
            draw.rectangle(shift(box), outline=(60, 220, 90), width=2)
        for bone, detection in found.items():
            if detection.box is not None:
                draw.rectangle(shift(detection.box), outline=BOX_COLOURS[bone], width=2)
        missing = [b for b, d in found.items() if d.box is None]
        label = f"{title}" + (f"  MISSING {','.join(missing)}" if missing else "")
        draw.text((4, 4), label, fill=(255, 255, 0) if missing else (255, 255, 255), font=font)
        sheet.paste(pil, ((index % columns) * cell, (index // columns) * cell))
    out = Path(out)
    save_png(out, np.asarray(sheet))
    return out


# Pillow's bundled font has no glyph for these and draws a box in their place
_DRAWABLE = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2265": ">=", "\u2264": "<=", "\u00d7": "x"})


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text.translate(_DRAWABLE), width) or [""]


def review_lines(reasons: list[str], room: int, width: int = 50) -> list[str]:
    """The review reasons wrapped to ``width`` characters in at most ``room`` lines: when they do
    not all fit, the last line says how many more the JSON holds, so none is lost silently."""
    lines: list[str] = []
    for index, reason in enumerate(reasons):
        wrapped = _wrap(reason, width)
        more = len(reasons) - index
        if len(lines) + len(wrapped) + (more > 1) > room:  # keep a line for the note while more follow
            return lines + [f"+ {more} more reason{'s' if more > 1 else ''}: see the JSON"]
        lines += wrapped
    return lines


def heatmap_rgb(crop: np.ndarray, heat: np.ndarray | None) -> np.ndarray:
    """A crop as RGB, with a Grad-CAM heatmap blended in when given (red = most influential)."""
    grey = to_uint8(crop)
    rgb = np.stack([grey] * 3, -1).astype(np.float32)
    if heat is not None:
        import matplotlib

        colour = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
        rgb = 0.55 * rgb + 0.45 * colour
    return rgb.clip(0, 255).astype(np.uint8)


def reading_text(result) -> str:
    """A bone's reading in a few characters: "R7 (83%)", or "not read" where it was withheld."""
    return "not read" if result.prediction is None else f"{result.prediction} ({result.confidence:.0%})"


def render_overlay(image: np.ndarray, report: StageReport, crops: dict[str, np.ndarray],
                   heatmaps: dict[str, np.ndarray] | None = None, height: int = 900):
    """The result picture: radiograph with boxes and labels, the two crops enlarged at the side,
    stage/phase/confidence, bracing guidance and any review flags. Returns a PIL RGB image."""
    from PIL import Image, ImageDraw

    h, w = image.shape
    scale = height / h
    view = Image.fromarray(to_uint8(image)).convert("RGB").resize((max(1, round(w * scale)), height),
                                                                  Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(view)
    font = _font(18)
    for bone in BONES:
        result = report.bone(bone)
        if result.box is None:
            continue
        box = [v * scale for v in result.box]
        colour = BOX_COLOURS[bone]
        draw.rectangle(box, outline=colour, width=3)
        label = f"{bone} {reading_text(result)}"
        bbox = draw.textbbox((box[0], box[1] - 24), label, font=font)
        draw.rectangle(bbox, fill=(0, 0, 0))
        draw.text((box[0], box[1] - 24), label, fill=colour, font=font)
    panel_w = 420
    panel = Image.new("RGB", (panel_w, height), (24, 26, 30))
    pdraw = ImageDraw.Draw(panel)
    y = 12
    pdraw.text((12, y), "drustage: DRU skeletal maturity", fill=(255, 255, 255), font=_font(20))
    pdraw.text((12, y + 24), "decision support, not diagnosis", fill=(170, 170, 170), font=_font(13))
    y += 44
    for bone in BONES:
        result = report.bone(bone)
        colour = BOX_COLOURS[bone]
        if bone in crops:
            tile = Image.fromarray(heatmap_rgb(crops[bone], (heatmaps or {}).get(bone))).resize((192, 256))
            panel.paste(tile, (12, y))
            source = "box given" if result.detection_score is None else f"detector: {result.detection_score:.2f}"
            if result.prediction is None:
                lines = [bone.upper(), reading_text(result), "(withheld: check the box)", source]
            else:
                phase_confidence = result.phase_confidence or result.confidence
                lines = [bone.upper(), reading_text(result), f"phase: {result.phase} ({phase_confidence:.0%})", source]
            for k, line in enumerate(lines):
                pdraw.text((216, y + 4 + 26 * k), line, fill=colour if k == 0 else (230, 230, 230), font=_font(18))
            top = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:4]
            for k, (name, p) in enumerate(top):
                yy = y + 142 + 22 * k
                pdraw.rectangle((216, yy + 4, 216 + int(90 * p), yy + 16), fill=colour)
                pdraw.text((312, yy), f"{name} {p:.0%}", fill=(200, 200, 200), font=_font(13))
        else:
            pdraw.text((12, y), f"{bone.upper()}: NOT FOUND", fill=(255, 190, 0), font=_font(20))
        y += 270
    guidance = report.guidance
    if guidance:
        pdraw.text((12, y), f"Guidance: {guidance['action']}", fill=(255, 255, 255), font=_font(18))
        y += 26
        for line in _wrap(guidance["wording"], 44)[:6]:
            pdraw.text((12, y), line, fill=(210, 210, 210), font=_font(14))
            y += 18
        for line in _wrap(guidance["disclaimer"], 50)[:3]:
            pdraw.text((12, y), line, fill=(150, 150, 150), font=_font(12))
            y += 15
    if report.needs_review:
        y += 6
        pdraw.text((12, y), "REVIEW NEEDED", fill=(255, 190, 0), font=_font(18))
        y += 24
        for line in review_lines(report.review_reasons, max(1, (height - y) // 16)):
            pdraw.text((12, y), line, fill=(255, 210, 120), font=_font(13))
            y += 16
    sheet = Image.new("RGB", (view.width + panel_w, height))
    sheet.paste(view, (0, 0))
    sheet.paste(panel, (view.width, 0))
    return sheet
