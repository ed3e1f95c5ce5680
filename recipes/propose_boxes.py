"""Radius and ulna box proposals on real films, and zoomed contact sheets to check them by eye.

The first two steps of the box-making process in ``annotations/real/README.md``:

    python recipes/propose_boxes.py DETECTOR.pt ../shared/data/real rsna-halfres-extra/images --out runs/proposals

writes ``proposals.csv`` (the box CSV ``drustage import --boxes`` reads, ``source = proposal``,
plus each box's score; a bone not found has no row) and ``sheets/sheet_NN.png``: 20 films a
sheet, each as the whole film (left) beside a zoom on the wrist (right), radius red, ulna blue,
numbered as in ``sheets/index.csv``. A person then keeps, redraws or lists each film.
"""
from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np

from drustage.imaging import RadiographError, load_radiograph, to_uint8
from drustage.inference.detector import Detector
from drustage.io_utils import atomic_write_text, save_png
from drustage.stages import BONES
from drustage.viz import BOX_COLOURS, _font

PER_SHEET, COLUMNS, CELL = 20, 4, 300


def panel(image: np.ndarray, boxes: dict, title: str) -> np.ndarray:
    """The whole film (left third) beside a zoom on the boxes (right), boxes drawn on both."""
    from PIL import Image, ImageDraw

    grey = Image.fromarray(to_uint8(image)).convert("RGB")
    h, w = image.shape
    found = [b for b in boxes.values() if b is not None]
    if found:
        x1, y1 = min(b[0] for b in found), min(b[1] for b in found)
        x2, y2 = max(b[2] for b in found), max(b[3] for b in found)
        side = max(x2 - x1, y2 - y1) * 2.2
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        view = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    else:
        view = (0, 0, max(h, w), max(h, w))
    out = Image.new("RGB", (CELL + CELL // 2, CELL), (20, 20, 20))
    thumb_scale = min((CELL // 2) / w, CELL / h)
    thumb = grey.resize((max(1, int(w * thumb_scale)), max(1, int(h * thumb_scale))))
    zoom_scale = CELL / (view[2] - view[0])
    zoom = grey.crop(tuple(int(v) for v in view)).resize((CELL, CELL))
    for picture, scale, origin in ((thumb, thumb_scale, (0, 0)), (zoom, zoom_scale, view[:2])):
        draw = ImageDraw.Draw(picture)
        for bone, box in boxes.items():
            if box is not None:
                draw.rectangle([(box[0] - origin[0]) * scale, (box[1] - origin[1]) * scale,
                                (box[2] - origin[0]) * scale, (box[3] - origin[1]) * scale],
                               outline=BOX_COLOURS[bone], width=2)
    draw = ImageDraw.Draw(zoom)
    draw.text((4, 4), title, fill=(255, 255, 0), font=_font(15))
    out.paste(thumb, (0, 0))
    out.paste(zoom, (CELL // 2, 0))
    return np.asarray(out)


def write_sheets(panels: list[np.ndarray], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(panels), PER_SHEET):
        group = panels[start:start + PER_SHEET]
        ph, pw = group[0].shape[:2]
        rows = -(-len(group) // COLUMNS)
        sheet = np.full((rows * ph, COLUMNS * pw, 3), 60, np.uint8)
        for i, picture in enumerate(group):
            r, c = divmod(i, COLUMNS)
            sheet[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] = picture
        save_png(folder / f"sheet_{start // PER_SHEET:02d}.png", sheet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detector")
    parser.add_argument("root", help="folder the box CSV's file names are relative to")
    parser.add_argument("folders", nargs="+", help="image folders or files under ROOT")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root, out = Path(args.root), Path(args.out)
    files = sorted(p for f in args.folders for p in ((root / f).glob("*.png") if (root / f).is_dir() else [root / f]))
    find = Detector.from_checkpoint(args.detector, args.threshold)
    rows, index, panels = [], ["panel,file,sheet"], []
    for number, path in enumerate(files):
        name = path.relative_to(root).as_posix()
        try:
            image = load_radiograph(path).image
        except RadiographError as error:
            logging.warning("%s: %s", name, error)
            continue
        found = find(image)
        boxes = {bone: found[bone].box for bone in BONES}
        for bone in BONES:
            if boxes[bone] is not None:
                rows.append([name, bone, *(f"{v:.1f}" for v in boxes[bone]), "proposal", f"{found[bone].score:.4f}"])
        scores = " ".join(f"{b[0]}{found[b].score:.2f}" for b in BONES)
        panels.append(panel(image, boxes, f"#{len(panels)} {path.stem} {scores}"))
        index.append(f"{len(panels) - 1},{name},{(len(panels) - 1) // PER_SHEET}")
        if number % 50 == 0:
            logging.info("%d/%d films", number, len(files))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "proposals.csv.tmp", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "bone", "x1", "y1", "x2", "y2", "source", "score"])
        writer.writerows(rows)
    (out / "proposals.csv.tmp").replace(out / "proposals.csv")
    write_sheets(panels, out / "sheets")
    atomic_write_text(out / "sheets" / "index.csv", "\n".join(index) + "\n")
    logging.info("%d films, %d boxes: %s", len(panels), len(rows), out)


if __name__ == "__main__":
    main()
