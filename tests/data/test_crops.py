import numpy as np
import pytest

from drustage.data.crops import (
    CROP_SIZE,
    OFF_BONE_DISTANCE,
    crop_region,
    crop_window,
    extract_context_crops,
    needs_mirror,
    off_bone_boxes,
)
from drustage.data.layout import read_dataset


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


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_off_bone_boxes_keep_their_size_stay_inside_and_clear_of_both_bones():
    boxes = {"radius": (300.0, 600.0, 400.0, 700.0), "ulna": (420.0, 610.0, 500.0, 690.0)}
    for seed in range(50):
        moved = off_bone_boxes(boxes, 1000, 1200, np.random.default_rng(seed))
        assert set(moved) == {"radius", "ulna"}
        for bone, box in moved.items():
            x1, y1, x2, y2 = boxes[bone]
            assert box[2] - box[0] == pytest.approx(x2 - x1) and box[3] - box[1] == pytest.approx(y2 - y1)
            assert box[0] >= 0 and box[1] >= 0 and box[2] <= 1000 and box[3] <= 1200
            assert not any(_overlap(box, b) for b in boxes.values())
            dx, dy = ((box[0] + box[2]) - (x1 + x2)) / 2, ((box[1] + box[3]) - (y1 + y2)) / 2
            shift = np.hypot(dx / (x2 - x1), dy / (y2 - y1))  # in box sizes
            assert OFF_BONE_DISTANCE[0] - 1e-9 <= shift <= OFF_BONE_DISTANCE[1] + 1e-9
    assert off_bone_boxes(boxes, 1000, 1200, np.random.default_rng(3)) == off_bone_boxes(
        boxes, 1000, 1200, np.random.default_rng(3))
    # a film that is all bone box has no place off the bones: the bone is left out, not forced
    assert off_bone_boxes({"radius": (0.0, 0.0, 90.0, 90.0)}, 100, 100, np.random.default_rng(0)) == {}


def test_off_bone_crops_differ_from_the_bones_and_narrowed_datasets_get_their_own_cache(quick_dataset):
    dataset = read_dataset(quick_dataset)
    bones = extract_context_crops(dataset, progress=False)
    moved = extract_context_crops(dataset, progress=False, off_bone_seed=0)
    again = extract_context_crops(dataset, progress=False, off_bone_seed=0)
    image_id = next(i for i in moved if "radius" in moved[i])
    assert not np.allclose(moved[image_id]["radius"], bones[image_id]["radius"])
    np.testing.assert_array_equal(moved[image_id]["radius"], again[image_id]["radius"])  # seeded: the same places
    first = dataset.with_records(dataset.records[:2])
    assert set(extract_context_crops(first, progress=False)) == {r.image_id for r in dataset.records[:2]}
