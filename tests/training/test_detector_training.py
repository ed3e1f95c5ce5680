import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from drustage.cli import main
from drustage.data.layout import read_dataset, write_labels
from drustage.models.config import DetectorConfig
from drustage.models.detector import build_detector
from drustage.data.detection import BoxAugmentation, DetectionSet, box_iou, box_outlines, enclosing_boxes
from drustage.evaluation.detection import DetectionMetrics, held_out_ids
from drustage.imaging import load_radiograph
from drustage.inference.detector import Detector
from drustage.training.config import DetectorTrainConfig
from drustage.training.detector import _set_phase, _training_loader, schedule_phases, train_detector

# a narrow box head keeps each checkpoint at a few MB (the default FC-4096 head writes 290 MB)
TINY = DetectorConfig(min_size=160, max_size=200, representation_size=64)


def test_alternating_schedule_keeps_paper_ratio():
    phases = schedule_phases(DetectorTrainConfig(schedule="alternating", iterations=2400))
    assert phases == [("rpn", 800), ("fast-rcnn", 400), ("rpn-shared", 800), ("fast-rcnn-shared", 400)]
    assert schedule_phases(DetectorTrainConfig(iterations=10)) == [("joint", 10)]


def test_phases_freeze_the_right_parts():
    model = build_detector(TINY)
    losses = _set_phase(model, "rpn-shared")
    assert losses == ("loss_objectness", "loss_rpn_box_reg")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.rpn.parameters())
    assert not any(p.requires_grad for p in model.roi_heads.parameters())
    assert _set_phase(model, "fast-rcnn") == ("loss_classifier", "loss_box_reg")
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_augmentation_moves_boxes_with_the_image(quick_dataset):
    dataset = read_dataset(quick_dataset)
    plain = DetectionSet(dataset, list(dataset.records[:3]), 200)
    moved = DetectionSet(dataset, list(dataset.records[:3]), 200, BoxAugmentation())
    torch.manual_seed(1)
    for index in range(3):
        image, target = plain[index]
        assert image.shape[0] == 1 and max(image.shape[1:]) <= 200
        assert target["labels"].tolist() == [1, 2]
        for box in target["boxes"]:  # the true box holds bright bone
            x1, y1, x2, y2 = box.int().tolist()
            assert image[0, y1:y2, x1:x2].mean() > image[0].mean()
        aug_image, aug_target = moved[index]
        for box in aug_target["boxes"]:
            x1, y1, x2, y2 = box.int().tolist()
            assert 0 <= x1 < x2 <= aug_image.shape[2] and 0 <= y1 < y2 <= aug_image.shape[1]
            assert aug_image[0, y1:y2, x1:x2].mean() > aug_image[0].mean()


def test_a_turned_box_keeps_its_size():
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional

    box = torch.tensor([[100.0, 120.0, 160.0, 170.0]])
    canvas = (300, 300)
    assert torch.allclose(enclosing_boxes(box_outlines(box), canvas), box, atol=1e-3)

    def turned(angle):
        outline = tv_tensors.KeyPoints(box_outlines(box), canvas_size=canvas)
        corners = tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=canvas)
        return (enclosing_boxes(functional.affine(outline, angle=angle, translate=[0, 0], scale=1.0, shear=[0.0])
                                .as_subclass(torch.Tensor), canvas),
                functional.affine(corners, angle=angle, translate=[0, 0], scale=1.0, shear=[0.0]))

    def sides(b):
        return (b[0, 2:] - b[0, :2]) / (box[0, 2:] - box[0, :2])

    from_outline, from_corners = turned(10.0)
    assert torch.allclose(sides(from_outline), torch.ones(2), atol=0.03)  # the ellipse keeps the size
    assert (sides(from_corners) > 1.1).all()  # the corners' box grows: what the detector used to learn

    def centre(b):
        return (b[0, :2] + b[0, 2:]) / 2

    assert torch.allclose(centre(from_outline), centre(from_corners), atol=0.5)  # both turn about one centre
    # a box pushed past the frame is clipped to it
    assert enclosing_boxes(box_outlines(torch.tensor([[280.0, -10.0, 340.0, 40.0]])), canvas).tolist() == \
        [[280.0, 0.0, 300.0, 40.0]]


def test_augmented_boxes_are_on_average_the_true_size(quick_dataset):
    dataset = read_dataset(quick_dataset)
    records = list(dataset.records[:3])
    plain = DetectionSet(dataset, records, 200)
    turned = DetectionSet(dataset, records, 200, BoxAugmentation(rotation=10.0))
    torch.manual_seed(0)
    ratios = []
    for index in range(len(records)):
        true_sides = plain[index][1]["boxes"][:, 2:] - plain[index][1]["boxes"][:, :2]
        for _ in range(20):
            boxes = turned[index][1]["boxes"]
            if len(boxes) == len(true_sides):
                ratios.append(((boxes[:, 2:] - boxes[:, :2]) / true_sides).mean().item())
    # zoom is drawn from 0.85-1.15 (mean 1); boxes re-boxed from their corners averaged 1.07 here
    assert len(ratios) > 40 and abs(np.mean(ratios) - 1.0) < 0.03


def test_augmentation_strength_is_set_per_dataset(quick_dataset):
    dataset = read_dataset(quick_dataset)
    records = list(dataset.records[:1])

    def radius_area(target):
        return float((target["boxes"][0, 2:] - target["boxes"][0, :2]).prod())

    plain_area = radius_area(DetectionSet(dataset, records, 200)[0][1])

    def area_ratios(augmentation):
        data = DetectionSet(dataset, records, 200, augmentation)
        torch.manual_seed(0)
        return [radius_area(data[0][1]) / plain_area for _ in range(40)]

    config = DetectorTrainConfig(rotation=[10, 0], min_scale=[0.85, 0.3])
    assert min(area_ratios(config.augmentation(0))) > 0.6  # default zoom 0.85-1.15
    assert min(area_ratios(config.augmentation(1))) < 0.3  # a film shrunk inside its frame
    assert replace(config, augment=False).augmentation(1) is None
    for bad, match in (({"rotation": 100}, "rotation must be between"), ({"min_scale": [0.85, 0.1]}, "min scale")):
        with pytest.raises(ValueError, match=match):
            DetectorTrainConfig(**bad).validate()
    with pytest.raises(ValueError, match="2 values of rotation for 3 datasets"):
        DetectorTrainConfig(rotation=[10, 45]).check_dataset_count(3)


@pytest.fixture(scope="module")
def tiny_detector(quick_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    config = DetectorTrainConfig(model=TINY, iterations=3, validate_every=3, batch_size=2, warmup=1)
    result = train_detector(read_dataset(quick_dataset), config, out, progress=False)
    return out / "detector.pt", result


def test_train_evaluate_and_crop(quick_dataset, tiny_detector, tmp_path, capsys):
    checkpoint, result = tiny_detector
    payload = torch.load(checkpoint, weights_only=True)
    assert result.test.n == 1 and list(result.by_dataset) == [quick_dataset.name]  # 10% of 12 held out
    assert DetectionMetrics.from_dict(payload["metrics"]) == result.test  # stored as plain data, read back typed
    assert payload["config"]["model"]["backbone"] == "zfnet" and payload["format"] == "drustage-detector"
    assert main(["evaluate-detector", str(checkpoint), str(quick_dataset), "--out",
                 str(tmp_path / "eval"), "--all", "--threshold", "0"]) == 0
    assert (tmp_path / "eval/detections.png").is_file()
    evaluated = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert evaluated["n"] == 12
    # cases.csv: every image's kept boxes in original pixels, consistent with the summary metrics
    cases = pd.read_csv(tmp_path / "eval/cases.csv")
    assert len(cases) == 24 and set(cases.bone) == {"radius", "ulna"}
    for bone in ("radius", "ulna"):
        assert cases[cases.bone == bone].iou.mean() == pytest.approx(evaluated[bone]["mean_iou"], abs=1e-3)
        assert cases[cases.bone == bone].centred.mean() == pytest.approx(evaluated[bone]["centre_hit_rate"])
    truth = {(r.image_id, bone): box for r in read_dataset(quick_dataset).records for bone, box in r.boxes.items()}
    assert cases.found.all()  # threshold 0 keeps every bone's best box
    for row in cases.itertuples():
        true_box = (row.true_x1, row.true_y1, row.true_x2, row.true_y2)
        assert true_box == pytest.approx(truth[row.image_id, row.bone], abs=0.06)
        # IoU does not depend on scale, so boxes mapped back to original pixels keep it
        assert box_iou((row.x1, row.y1, row.x2, row.y2), true_box) == pytest.approx(row.iou, abs=0.02)
    # the evaluation reads each film as predict does: the same kept boxes and scores
    detector = Detector.from_checkpoint(checkpoint, threshold=0.0)
    dataset = read_dataset(quick_dataset)
    for record in dataset.records:
        found = detector(load_radiograph(dataset.path_of(record)).image)
        for bone in ("radius", "ulna"):
            row = cases[(cases.image_id == record.image_id) & (cases.bone == bone)].iloc[0]
            assert (row.x1, row.y1, row.x2, row.y2) == pytest.approx(found[bone].box, abs=0.1)
            assert row.score == pytest.approx(found[bone].score, abs=1e-4)
    # --held-out-of: the test images of another run (e.g. the one a fine-tune started from)
    first_three = [r.image_id for r in read_dataset(quick_dataset).records[:3]]
    other = dict(payload, data={**payload["data"], "test_ids_by_dataset": {quick_dataset.name: first_three}})
    torch.save(other, tmp_path / "other.pt")
    assert main(["evaluate-detector", str(checkpoint), str(quick_dataset), "--out", str(tmp_path / "eval3"),
                 "--held-out-of", str(tmp_path / "other.pt")]) == 0
    assert json.loads((tmp_path / "eval3/metrics.json").read_text())["n"] == 3
    # an untrained detector finds little: crop reports the misses and still writes what it has
    assert main(["crop", str(quick_dataset), "--out", str(tmp_path / "detected"), "--detector",
                 str(checkpoint), "--threshold", "0.99", "--quiet"]) == 0
    assert "not found" in capsys.readouterr().out
    assert len(read_dataset(tmp_path / "detected").records) == 12


def test_crop_with_a_detector_records_each_films_stray_candidates(quick_dataset, tmp_path, monkeypatch):
    from PIL import Image

    from drustage.data.crops import crop_region
    from drustage.imaging import load_radiograph, to_uint8
    from drustage.inference import crop_dataset
    from drustage.inference.detector import Detector

    # a detector whose output holds both bones and a confident box on a fingertip, in a 512-pixel view
    output = {"labels": torch.tensor([1, 2, 1]), "scores": torch.tensor([0.95, 0.9, 0.7]),
              "boxes": torch.tensor([[100.0, 300.0, 160.0, 360.0], [40.0, 305.0, 95.0, 355.0],
                                     [200.0, 20.0, 230.0, 50.0]])}
    monkeypatch.setattr(crop_dataset.Detector, "from_checkpoint",
                        classmethod(lambda cls, path, threshold: Detector(lambda pixels: output, 512, threshold)))
    # films imported without a sheet: their side is unknown until the boxes give it
    assert main(["import", str(quick_dataset / "images"), "--out", str(tmp_path / "films"), "--link"]) == 0
    assert all(r.laterality is None for r in read_dataset(tmp_path / "films").records)
    assert main(["crop", str(tmp_path / "films"), "--out", str(tmp_path / "detected"), "--detector", "any.pt",
                 "--quiet"]) == 0
    detected = read_dataset(tmp_path / "detected")
    assert all(r.laterality == "L" for r in detected.records)  # the radius box lies right of the ulna's
    strays = detected.manifest["stray_boxes"]
    assert set(strays) == {r.image_id for r in detected.records}
    for record in detected.records:
        (stray,) = strays[record.image_id]
        # the fingertip in the film's pixels: scaled back like the kept boxes (stored to 0.1 px)
        scale = (record.boxes["radius"][2] - record.boxes["radius"][0]) / 60.0
        assert stray == pytest.approx([v * scale for v in (200.0, 20.0, 230.0, 50.0)], abs=1.0)
    # the crops are mirrored as the predictor mirrors a left hand's (labels.csv keeps boxes to 0.1 px)
    record = detected.records[0]
    radiograph = load_radiograph(detected.path_of(record)).image
    crop = np.asarray(Image.open(tmp_path / "detected" / "crops" / "radius" / f"{record.image_id}.png")).astype(float)
    mirrored, plain = (to_uint8(crop_region(radiograph, record.boxes["radius"], mirror)).astype(float)
                       for mirror in (True, False))
    assert np.abs(crop - mirrored).mean() < 1.0 < np.abs(crop - plain).mean()
    # from the dataset's own boxes there are no candidates
    assert main(["crop", str(quick_dataset), "--out", str(tmp_path / "labels"), "--quiet"]) == 0
    assert "stray_boxes" not in read_dataset(tmp_path / "labels").manifest


def test_crop_from_labels_trains_a_classifier(quick_dataset, tmp_path):
    out = tmp_path / "crops"
    assert main(["crop", str(quick_dataset), "--out", str(out), "--quiet"]) == 0
    rows = (out / "crops.csv").read_text().splitlines()
    assert len(rows) == 1 + 24 and all(r.endswith(",1.0000") for r in rows[1:])
    from PIL import Image

    first = read_dataset(out).records[0].image_id
    assert np.asarray(Image.open(out / "crops/radius" / f"{first}.png")).shape == (128, 96)
    assert main(["train-classifier", str(out), "--out", str(tmp_path / "clf"), "--net", "custom", "--conv", "4c3",
                 "--fc", "8", "--epochs", "1", "--augment", "1", "--val-fraction", "0", "--quiet"]) == 0


def test_detector_bad_inputs(quick_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:  # refused by the option's choices, as a usage error
        main(["train-detector", str(quick_dataset), "--out", str(tmp_path / "x"), "--backbone", "vgg"])
    assert exited.value.code == 2 and "invalid choice: 'vgg'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown backbone"):
        DetectorConfig(backbone="vgg").validate()
    classifier_like = tmp_path / "c.pt"
    classifier_like.write_bytes(b"junk")
    assert main(["evaluate-detector", str(classifier_like), str(quick_dataset), "--out", str(tmp_path / "e")]) == 1
    assert "c.pt" in capsys.readouterr().err


@pytest.mark.real
def test_real_detection_sheet(real_data, quick_dataset, tiny_detector, tmp_path, capsys):
    checkpoint, _ = tiny_detector
    assert main(["evaluate-detector", str(checkpoint), str(quick_dataset), "--out", str(tmp_path / "eval"),
                 "--real", str(real_data / "wrist-16bit" / "images")]) == 0
    assert "of 3; check the boxes by eye" in capsys.readouterr().out
    from PIL import Image

    assert Image.open(tmp_path / "eval/real_detections.png").size[0] >= 256 * 3


def test_detector_input_is_contrast_stretched_and_downscaled():
    from drustage.imaging import downscale

    dark = np.linspace(0.0, 0.25, 1000 * 800, dtype=np.float32).reshape(1000, 800)  # an under-exposed film
    pixels, frame = downscale(dark, 500)
    assert pixels.shape == (500, 400) and frame.scale == pytest.approx(0.5) and (frame.left, frame.top) == (0, 0)
    assert pixels.min() <= 2 and pixels.max() >= 253


def test_each_dataset_is_split_with_its_own_fraction(quick_dataset):
    dataset = read_dataset(quick_dataset)
    config = DetectorTrainConfig(test_fraction=[0.25, 0.5], val_fraction=0.1)
    assert len(config.split(dataset, 0)[2]) == 3
    assert len(config.split(dataset, 1)[2]) == 6
    config.check_dataset_count(2)
    with pytest.raises(ValueError, match="2 values of test_fraction for 3 datasets"):
        config.check_dataset_count(3)


def test_dataset_weights_set_each_datasets_share_of_batches():
    big = torch.utils.data.TensorDataset(torch.zeros(40))
    small = torch.utils.data.TensorDataset(torch.ones(4))

    def share_of_small(config):
        loader = _training_loader([big, small], config)
        drawn = [float(x) for _ in range(20) for batch in loader for x in batch[0]]
        return np.mean(drawn)

    assert share_of_small(DetectorTrainConfig(dataset_weights=[1, 1])) == pytest.approx(0.5, abs=0.06)
    assert share_of_small(DetectorTrainConfig(dataset_weights=[3, 1])) == pytest.approx(0.25, abs=0.06)
    assert share_of_small(DetectorTrainConfig()) == pytest.approx(4 / 44, abs=0.01)
    with pytest.raises(ValueError, match="2 dataset weights for 3"):
        DetectorTrainConfig(dataset_weights=[1, 1]).check_dataset_count(3)


def test_train_on_two_datasets_reports_each(quick_dataset, tmp_path, capsys):
    second = tmp_path / "second"
    second.mkdir()
    # the same image ids as the first dataset, as two phantom sets have
    records = [replace(r, file=str(quick_dataset / r.file)) for r in read_dataset(quick_dataset).records[:8]]
    write_labels(second, records)
    out = tmp_path / "run"
    assert main(["train-detector", str(quick_dataset), str(second), "--out", str(out), "--dataset-weights", "1"]) != 0
    assert "1 dataset weights for 2 datasets" in capsys.readouterr().err and not out.exists()
    assert main(["train-detector", str(quick_dataset), str(second), "--out", str(out), "--min-size", "160",
                 "--max-size", "200", "--representation-size", "64", "--iterations", "2", "--validate-every", "2",
                 "--dataset-weights", "1", "1",
                 "--test-fraction", "0.25", "0.5", "--rotation", "10", "45", "--min-scale", "0.85", "0.5",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{quick_dataset.name}: n=3" in printed and "second: n=4" in printed
    payload = torch.load(out / "detector.pt", weights_only=True)
    assert payload["data"]["datasets"] == [quick_dataset.name, "second"]
    by_dataset = payload["data"]["test_ids_by_dataset"]
    assert {name: len(ids) for name, ids in by_dataset.items()} == {quick_dataset.name: 3, "second": 4}
    assert held_out_ids(payload, read_dataset(second)) == set(by_dataset["second"])
    assert held_out_ids(payload, read_dataset(quick_dataset)) == set(by_dataset[quick_dataset.name])
    unseen = tmp_path / "unseen"
    unseen.mkdir()
    write_labels(unseen, records)
    assert held_out_ids(payload, read_dataset(unseen)) == set()  # a dataset it never trained on: all of it
    # each dataset is scored on its own held-out images only, whatever the other held out
    for dataset, n in ((second, 4), (quick_dataset, 3)):
        assert main(["evaluate-detector", str(out / "detector.pt"), str(dataset), "--out", str(tmp_path / "e")]) == 0
        assert json.loads((tmp_path / "e/metrics.json").read_text())["n"] == n
    assert set(payload["metrics"]["by_dataset"]) == {quick_dataset.name, "second"}
    assert payload["config"]["dataset_weights"] == [1.0, 1.0]
    assert payload["config"]["rotation"] == [10.0, 45.0] and payload["config"]["min_scale"] == [0.85, 0.5]


def test_boxes_map_back_inside_the_original_image():
    from drustage.inference.detector import Detector

    def backend(pixels):  # a box reaching the far corner of the downscaled image (450 x 512 for 957 x 1090)
        return {"boxes": torch.tensor([[10.0, 10.0, *map(float, pixels.shape[::-1])]]),
                "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}

    detector = Detector(backend, max_side=512, threshold=0.5)
    found = detector(np.zeros((957, 1090), dtype=np.float32))
    assert found["radius"].box == pytest.approx((10 * 1090 / 512, 10 * 1090 / 512, 1090.0, 957.0))


def test_centre_hit_counts_a_loosely_framed_box_on_the_right_bone():
    from drustage.data.detection import LABELS
    from drustage.models.detector import Detection
    from drustage.evaluation.detection import DetectorRun, detector_metrics

    true = {"radius": (100.0, 100.0, 200.0, 200.0), "ulna": (220.0, 110.0, 280.0, 190.0)}
    kept = [  # image 1: a loose box around the radius (IoU 0.44), the ulna's box beside the bone
        {"radius": Detection("radius", (80.0, 60.0, 230.0, 210.0), 0.9),
         "ulna": Detection("ulna", (300.0, 100.0, 360.0, 180.0), 0.9)},
        # image 2: the radius exactly, the ulna not found
        {"radius": Detection("radius", (100.0, 100.0, 200.0, 200.0), 0.9), "ulna": Detection("ulna", None, 0.2)},
    ]
    predictions = [{"boxes": torch.tensor([d.box for d in found.values() if d.box]),
                    "scores": torch.tensor([d.score for d in found.values() if d.box]),
                    "labels": torch.tensor([LABELS[d.bone] for d in found.values() if d.box])}
                   for found in kept]
    truths = [{"boxes": torch.tensor([true["radius"], true["ulna"]]),
               "labels": torch.tensor([LABELS["radius"], LABELS["ulna"]])}] * 2
    run = DetectorRun(predictions, truths, kept, [true, true])
    metrics = detector_metrics(run)
    assert run.iou(0, "radius") == pytest.approx(0.444, abs=1e-3) and run.centre_inside(0, "radius")
    assert metrics.radius.detection_rate_iou50 == 0.5 and metrics.radius.centre_hit_rate == 1.0
    assert not run.centre_inside(0, "ulna") and not run.centre_inside(1, "ulna")
    assert metrics.ulna.centre_hit_rate == 0.0
