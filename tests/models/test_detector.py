import pytest
import torch

from drustage.models.config import BACKBONES, DetectorConfig
from drustage.models.detector import ZFNetFeatures, best_boxes, build_detector, plausible_pair, stray_boxes


@pytest.mark.parametrize("batch_norm", [True, False])
def test_zfnet_features_follow_the_paper(batch_norm):
    features = ZFNetFeatures(batch_norm=batch_norm)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in features.modules()) == batch_norm
    convs = [m for m in features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (96, 7, 2), (256, 5, 2), (384, 3, 1), (384, 3, 1), (256, 3, 1)]
    assert features(torch.rand(1, 1, 256, 192)).shape == (1, 256, 16, 12)  # stride 16


@pytest.mark.parametrize("backbone", BACKBONES)
def test_detector_trains_and_predicts_on_grey_images(backbone):
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(backbone=backbone, min_size=128, max_size=160))
    images = [torch.rand(1, 200, 150), torch.rand(1, 180, 160)]
    targets = [{"boxes": torch.tensor([[20.0, 120.0, 70.0, 180.0], [80.0, 130.0, 120.0, 175.0]]),
                "labels": torch.tensor([1, 2])}] * 2
    model.train()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.inference_mode():
        outputs = model(images)
    assert len(outputs) == 2 and outputs[0]["boxes"].shape[1] == 4
    if len(outputs[0]["boxes"]):  # boxes come back in original pixels
        assert float(outputs[0]["boxes"][:, 2].max()) <= 150 + 1e-3


def test_unknown_backbone_and_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="zfnet, mobilenet_v3"):
        build_detector(DetectorConfig(backbone="vgg"))
    with pytest.raises(ValueError, match="weights file not found"):
        build_detector(DetectorConfig(), weights=tmp_path / "none.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"nothing": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="do not fit"):
        build_detector(DetectorConfig(), weights=wrong)


def test_local_weights_round_trip(tmp_path):
    config = DetectorConfig(min_size=128, max_size=160, representation_size=64)
    model = build_detector(config)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    again = build_detector(config, weights=path)
    key = "backbone.body.0.weight"
    assert torch.equal(model.state_dict()[key], again.state_dict()[key])


def test_best_boxes_picks_clips_and_reports_missing():
    output = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [12.0, 11.0, 52.0, 61.0], [-5.0, 20.0, 30.0, 70.0]]),
              "labels": torch.tensor([1, 1, 2]), "scores": torch.tensor([0.6, 0.9, 0.3])}
    found = best_boxes(output, (300, 200), threshold=0.5, partner_threshold=0.5)
    assert found["radius"].box == (12.0, 11.0, 52.0, 61.0) and found["radius"].score == pytest.approx(0.9)
    assert found["ulna"].box is None and found["ulna"].score == pytest.approx(0.3)
    low = best_boxes(output, (300, 200), threshold=0.2, partner_threshold=0.2)
    assert low["ulna"].box == (0.0, 20.0, 30.0, 70.0)
    # a faint ulna beside a clear radius is kept as its partner (the default partner threshold)
    partnered = best_boxes(output, (300, 200), threshold=0.5)
    assert partnered["ulna"].box == (0.0, 20.0, 30.0, 70.0) and partnered["ulna"].score == pytest.approx(0.3)
    # ... but two faint boxes make no pair, and a faint box alone is never kept
    faint = {"boxes": output["boxes"][1:], "labels": output["labels"][1:], "scores": torch.tensor([0.4, 0.3])}
    assert all(d.box is None for d in best_boxes(faint, (300, 200), threshold=0.5).values())
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    assert best_boxes(empty, (10, 10))["radius"].box is None


def _output(*candidates):
    """A torchvision-style detection output from (label, score, box) triples."""
    return {"labels": torch.tensor([c[0] for c in candidates]), "scores": torch.tensor([c[1] for c in candidates]),
            "boxes": torch.tensor([c[2] for c in candidates], dtype=torch.float32)}


def test_best_boxes_choose_a_radius_and_ulna_that_fit_together():
    radius = [100.0, 200.0, 180.0, 270.0]
    inside_radius = [110.0, 210.0, 170.0, 260.0]  # the ulna head-like part of the same bone
    beside = [40.0, 205.0, 95.0, 255.0]
    marker = [400.0, 20.0, 460.0, 80.0]  # a lead side marker across the film
    found = best_boxes(_output((1, 0.95, radius), (2, 0.9, inside_radius), (2, 0.7, beside)), (500, 500))
    assert found["radius"].box == tuple(radius) and found["ulna"].box == tuple(beside)
    assert found["ulna"].score == pytest.approx(0.7)
    # only an implausible ulna: reported as not found (flagged), with its score kept
    found = best_boxes(_output((1, 0.95, radius), (2, 0.9, marker)), (500, 500))
    assert found["radius"].box == tuple(radius)
    assert found["ulna"].box is None and found["ulna"].score == pytest.approx(0.9)
    # both best boxes on one bone: the more confident one stays, the other bone is not found
    found = best_boxes(_output((1, 0.6, radius), (2, 0.9, inside_radius)), (500, 500))
    assert found["radius"].box is None and found["ulna"].box == tuple(inside_radius)


def test_stray_candidates_are_confident_boxes_clear_of_both_kept_bones():
    radius, ulna = [100.0, 200.0, 180.0, 270.0], [40.0, 205.0, 95.0, 255.0]
    thumb, fingertip, carpus = [200.0, 100.0, 260.0, 160.0], [300.0, 10.0, 330.0, 40.0], [60.0, 120.0, 170.0, 195.0]
    output = _output((1, 0.95, radius), (2, 0.9, ulna), (1, 0.6, thumb), (1, 0.5, [202.0, 102.0, 262.0, 162.0]),
                     (2, 0.4, fingertip), (1, 0.29, carpus), (2, 0.8, [105.0, 205.0, 175.0, 265.0]))
    found = best_boxes(output, (500, 500))
    # best first, either label; the thumb's near-copy, the faint carpus and the box on the radius are not strays
    assert stray_boxes(output, found, (500, 500)) == [tuple(thumb), tuple(fingertip)]
    assert stray_boxes(output, found, (500, 500), limit=1) == [tuple(thumb)]
    # clipped to the film
    edge = _output((1, 0.95, radius), (2, 0.9, ulna), (2, 0.7, [480.0, 10.0, 540.0, 60.0]))
    assert stray_boxes(edge, best_boxes(edge, (500, 500)), (500, 500)) == [(480.0, 10.0, 500.0, 60.0)]
    # a bone not found: the kept box may be the wrong one and a "stray" the bone itself, so none
    alone = _output((1, 0.95, radius), (1, 0.6, thumb))
    found = best_boxes(alone, (500, 500))
    assert found["ulna"].box is None and stray_boxes(alone, found, (500, 500)) == []


def test_every_true_pair_is_plausible(quick_dataset):
    from pathlib import Path

    from drustage.data.annotations import read_boxes
    from drustage.data.layout import read_dataset

    folder = Path(__file__).resolve().parents[2] / "annotations/real"
    pairs = [(r.boxes["radius"], r.boxes["ulna"]) for r in read_dataset(quick_dataset).records]
    for name in ("boxes.csv", "extra_boxes.csv"):
        pairs += [(boxes["radius"], boxes["ulna"]) for boxes in read_boxes(folder / name).values()]
    assert len(pairs) > 170
    assert all(plausible_pair(radius, ulna) for radius, ulna in pairs)
    assert not plausible_pair((100, 200, 180, 270), (400, 20, 460, 80))


def test_roi_align_option_runs_and_is_validated():
    from torchvision.ops import MultiScaleRoIAlign

    model = build_detector(DetectorConfig(min_size=128, max_size=160, roi_pool="roialign"))
    assert type(model.roi_heads.box_roi_pool) is MultiScaleRoIAlign
    paper = build_detector(DetectorConfig(min_size=128, max_size=160))
    assert type(paper.roi_heads.box_roi_pool).__name__ == "SingleLevelRoIPool"
    model.eval()
    with torch.inference_mode():
        assert model([torch.rand(1, 150, 120)])[0]["boxes"].shape[1] == 4
    with pytest.raises(ValueError, match="roi_pool"):
        build_detector(DetectorConfig(roi_pool="max"))
