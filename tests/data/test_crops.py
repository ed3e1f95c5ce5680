import numpy as np
import pytest

from drustage.data.crops import CROP_SIZE, crop_region, crop_window, needs_mirror


def test_window_keeps_aspect_and_contains_box():
    for box in [(10, 10, 110, 40), (10, 10, 40, 210), (0, 0, 96, 128)]:
        x1, y1, x2, y2 = crop_window(box)
        assert (y2 - y1) / (x2 - x1) == pytest.approx(CROP_SIZE[0] / CROP_SIZE[1])
        assert x1 <= box[0] and y1 <= box[1] and x2 >= box[2] and y2 >= box[3]


def test_crop_shape_content_and_mirror():
    image = np.zeros((400, 300), np.float32)
    image[100:200, 50:100] = 1.0  # left half of the box is bright
    box = (50, 100, 150, 200)
    crop = crop_region(image, box, mirror=False)
    assert crop.shape == CROP_SIZE and crop.dtype == np.float32
    assert crop[:, :40].mean() > crop[:, -40:].mean() + 0.5
    mirrored = crop_region(image, box, mirror=True)
    np.testing.assert_allclose(mirrored, crop[:, ::-1])


def test_crop_at_border_and_no_distortion():
    image = np.zeros((100, 100), np.float32)
    image[40:60, 40:60] = 1.0  # a square stays a square: equal bright extent in both directions
    crop = crop_region(image, (30, 30, 70, 70), mirror=False, margin=0.0)
    rows = np.where(crop.max(1) > 0.5)[0]
    cols = np.where(crop.max(0) > 0.5)[0]
    assert abs(len(rows) - len(cols)) <= 2
    edge = crop_region(image, (-20, -20, 20, 20), mirror=False)
    assert edge.shape == CROP_SIZE


def test_degenerate_box_and_mirror_rule():
    with pytest.raises(ValueError, match="no area"):
        crop_window((5, 5, 5, 10))
    assert needs_mirror("L") and not needs_mirror("R") and not needs_mirror(None)
