"""The project's own radius/ulna boxes on the shared real radiographs (annotations/real)."""

import csv
from pathlib import Path

from PIL import Image

from drustage.data.annotations import read_boxes

BOXES = Path(__file__).resolve().parents[2] / "annotations" / "real" / "boxes.csv"


def test_real_boxes_parse_with_both_bones_and_a_recorded_source():
    table = read_boxes(BOXES)
    assert len(table) >= 150
    assert all(set(boxes) == {"radius", "ulna"} for boxes in table.values())
    with open(BOXES, newline="") as handle:
        sources = {row["source"] for row in csv.DictReader(handle)}
    assert sources == {"drawn", "proposal-checked"}


def test_real_boxes_name_existing_images_and_lie_inside_them(real_data):
    with open(BOXES, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        path = real_data / row["file"]
        assert path.is_file(), row["file"]
        with Image.open(path) as image:
            width, height = image.size
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, row
        # a distal radius or ulna box is a few percent of the film, never most of it or a speck
        assert 0.001 < (x2 - x1) * (y2 - y1) / (width * height) < 0.25, row
