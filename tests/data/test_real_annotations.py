"""The project's own radius/ulna boxes on the shared real radiographs (annotations/real)."""

import csv
from pathlib import Path

import pytest
from PIL import Image

from drustage.data.annotations import read_boxes

FOLDER = Path(__file__).resolve().parents[2] / "annotations" / "real"
BOX_FILES = {"boxes.csv": 150, "extra_boxes.csv": 20, "rsna_extra_boxes.csv": 550,
             "hard_boxes.csv": 19}  # file: the fewest films it boxes


@pytest.mark.parametrize("name", BOX_FILES)
def test_real_boxes_parse_with_both_bones_and_a_recorded_source(name):
    table = read_boxes(FOLDER / name)
    assert len(table) >= BOX_FILES[name]
    assert all(set(boxes) == {"radius", "ulna"} for boxes in table.values())
    with open(FOLDER / name, newline="") as handle:
        sources = {row["source"] for row in csv.DictReader(handle)}
    assert sources <= {"drawn", "proposal-checked"} and "proposal-checked" in sources


def test_the_box_files_box_different_films():
    # each file is a dataset of its own, so the earlier files' splits stay as they were
    films = [set(read_boxes(FOLDER / name)) for name in BOX_FILES]
    assert sum(map(len, films)) == len(set().union(*films))


@pytest.mark.parametrize("name", BOX_FILES)
def test_real_boxes_name_existing_images_and_lie_inside_them(real_data, name):
    with open(FOLDER / name, newline="") as handle:
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
