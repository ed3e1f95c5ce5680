"""The detector at prediction time: a bone missed in the film is looked for in its mirror image."""

import numpy as np
import pytest
import torch

from drustage.inference.detector import Detector, rescued_boxes

WIDTH = 300
RADIUS = (100.0, 200.0, 180.0, 270.0)
ULNA = (40.0, 205.0, 95.0, 255.0)


def _output(*candidates):
    """A torchvision-style detection output from (label, score, box) triples."""
    return {"labels": torch.tensor([c[0] for c in candidates], dtype=torch.int64),
            "scores": torch.tensor([c[1] for c in candidates]),
            "boxes": torch.tensor([c[2] for c in candidates], dtype=torch.float32).reshape(-1, 4)}


def _mirrored(box):
    return (WIDTH - box[2], box[1], WIDTH - box[0], box[3])


def test_a_bone_missed_directly_is_found_in_the_mirrored_film_and_mapped_back():
    passes = []

    def network(mirrored):
        passes.append(mirrored)
        if mirrored:
            return _output((1, 0.9, _mirrored(RADIUS)), (2, 0.8, _mirrored(ULNA)))
        return _output((1, 0.95, RADIUS))

    found, output = rescued_boxes(network, (400, WIDTH))
    assert passes == [False, True]
    assert found["ulna"].box == pytest.approx(ULNA) and found["ulna"].score == pytest.approx(0.8)
    # the two passes' radius boxes are one box after the merge: the more confident, direct one
    assert found["radius"].box == pytest.approx(RADIUS) and found["radius"].score == pytest.approx(0.95)
    assert sorted(output["labels"].tolist()) == [1, 2]


def test_a_film_with_both_bones_found_is_read_once_and_unchanged():
    direct = _output((1, 0.95, RADIUS), (2, 0.7, ULNA))

    def network(mirrored):
        assert not mirrored, "a mirrored pass although both bones were found"
        return direct

    found, output = rescued_boxes(network, (400, WIDTH))
    assert output is direct
    assert found["radius"].box == RADIUS and found["ulna"].box == ULNA


def test_a_bone_missed_both_ways_stays_not_found_with_its_best_score():
    found, _ = rescued_boxes(lambda mirrored: _output((1, 0.95, _mirrored(RADIUS) if mirrored else RADIUS),
                                                      (2, 0.3, (400.0, 20.0, 460.0, 80.0))), (500, 500))
    assert found["radius"].box is not None
    assert found["ulna"].box is None and found["ulna"].score == pytest.approx(0.3)


def test_the_detector_gives_its_backend_the_mirrored_pixels_and_boxes_come_back_in_film_pixels():
    seen = []

    def backend(pixels):
        seen.append(pixels.copy())
        if len(seen) == 2:
            return _output((1, 0.9, _mirrored(RADIUS)), (2, 0.85, _mirrored(ULNA)))
        return _output((1, 0.95, RADIUS))

    film = np.tile(np.linspace(0.0, 1.0, 2 * WIDTH, dtype=np.float32), (800, 1))  # 2x the detector's side
    found, strays = Detector(backend, max_side=400).detect(film)
    assert len(seen) == 2 and seen[0].shape == (400, WIDTH)
    np.testing.assert_array_equal(seen[1], seen[0][:, ::-1])
    assert found["ulna"].box == pytest.approx(tuple(2 * v for v in ULNA))
    assert found["radius"].box == pytest.approx(tuple(2 * v for v in RADIUS))
    assert strays == []


def test_the_detectors_stray_candidates_come_back_in_film_pixels():
    thumb = (200.0, 100.0, 260.0, 160.0)
    detector = Detector(lambda pixels: _output((1, 0.95, RADIUS), (2, 0.9, ULNA), (2, 0.6, thumb)), max_side=400)
    film = np.tile(np.linspace(0.0, 1.0, 2 * WIDTH, dtype=np.float32), (800, 1))
    found, strays = detector.detect(film)
    assert found == detector(film) and found["radius"].box == pytest.approx(tuple(2 * v for v in RADIUS))
    assert len(strays) == 1 and strays[0] == pytest.approx(tuple(2 * v for v in thumb))


def test_a_small_film_padded_into_a_large_black_frame_is_detected_in_its_exposed_region():
    # a 300 x 240 film at (top 500, left 200) of a 1000 x 1000 black frame: the detector sees the film
    rng = np.random.default_rng(0)
    image = np.zeros((1000, 1000), np.float32)
    image[500:800, 200:440] = 0.2 + 0.6 * rng.random((300, 240), dtype=np.float32)
    seen = []

    def backend(pixels):
        seen.append(pixels.shape)
        # boxes at the film's exposed-region pixels the detector was given
        return _output((1, 0.95, (50.0, 60.0, 90.0, 100.0)), (2, 0.9, (10.0, 60.0, 40.0, 100.0)))

    found = Detector(backend, max_side=512)(image)
    margin_y, margin_x = round(0.02 * 300), round(0.02 * 240)
    assert seen == [(300 + 2 * margin_y, 240 + 2 * margin_x)]  # the film, not the frame, at full size
    left, top = 200 - margin_x, 500 - margin_y
    assert found["radius"].box == pytest.approx((left + 50, top + 60, left + 90, top + 100))
    assert found["ulna"].box == pytest.approx((left + 10, top + 60, left + 40, top + 100))
