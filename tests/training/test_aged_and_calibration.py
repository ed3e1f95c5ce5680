import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from drustage.cli import main
from drustage.data.layout import read_dataset
from drustage.evaluation.classification import (
    expected_calibration_error,
    probability_metrics,
    rank_correlation,
    reliability_table,
)
from drustage.inference.checkpoints import load_checkpoint
from drustage.inference.classifier import class_spread, expected_class, load_classifier, predict_logits
from drustage.stages import get_scheme
from drustage.training.classifier import ClassifierTrainResult, mixed_films, off_bone_count, train_classifier
from drustage.training.config import ClassifierConfig
from drustage.training.crop_sets import build_aged_crops, class_distribution, stray_crops
from drustage.training.objectives import TEMPERATURE_RANGE, fit_temperature, ranking_loss, within_sex_spearman

TINY = dict(net="custom", conv_spec="4c3-8c3-8c3", fc_spec="16", epochs=2, augment=2, test_fraction=0.25,
            val_fraction=0.0, batch_size=8, scheme="stage", aged_batch=4)


def test_fit_temperature_recovers_the_temperature_labels_were_drawn_with():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6000, 5, generator=generator) * 3
    labels = torch.multinomial((logits / 2.5).softmax(1), 1, generator=generator)[:, 0].numpy()
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.12)


def test_fit_temperature_stays_finite_on_perfectly_separated_crops():
    logits = torch.eye(4).repeat(5, 1) * 6  # every crop right and confident: the loss falls towards T = 0
    temperature = fit_temperature(logits, np.tile(np.arange(4), 5))
    assert TEMPERATURE_RANGE[0] <= temperature < 0.5  # finite and sharpening (the loss is flat near zero)


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 20000)
    right = rng.uniform(size=confidence.size) < confidence
    assert expected_calibration_error(confidence, right) < 0.02
    assert expected_calibration_error(np.ones_like(confidence), right) > 0.3
    rows = reliability_table(confidence, right)
    assert sum(r["n"] for r in rows) == confidence.size and all(abs(r["confidence"] - r["accuracy"]) < 0.05
                                                                for r in rows)


def test_class_distributions_sum_to_one_under_every_scheme():
    for name in ("stage", "phase4", "phase3"):
        scheme = get_scheme(name, "ulna")
        for age in (0.5, 9.0, 13.0, 19.0):
            target = class_distribution(scheme, age, "F", 0.8)
            assert target.shape == (scheme.num_classes,) and target.sum() == pytest.approx(1.0)
    # phase3 has no pre-peak class: an infant's mass goes to the nearest class it has
    assert class_distribution(get_scheme("phase3", "ulna"), 0.5, "F", 0.8).argmax() == 0
    assert class_distribution(get_scheme("stage", "radius"), 11.4, "F", 0.8).argmax() == 6


def test_stage_metrics_carry_the_phase_reading_and_calibration():
    scheme = get_scheme("stage", "radius")
    labels = np.array([0, 5, 6, 7, 10])
    probabilities = np.full((5, 11), 0.01)
    probabilities[np.arange(5), [1, 5, 7, 7, 10]] = 0.9
    probabilities /= probabilities.sum(1, keepdims=True)
    metrics = probability_metrics(labels, probabilities, scheme)
    assert metrics.accuracy == pytest.approx(3 / 5)
    assert metrics.phase.accuracy == pytest.approx(4 / 5)  # R1 read R2: still pre-peak
    assert 0 <= metrics.ece <= 1 and 0 <= metrics.phase.ece <= 1
    assert metrics.phase.classes == ("pre-peak", "peak", "deceleration", "mature") and metrics.phase.phase is None
    assert get_scheme("phase4", "radius").name != "stage"  # a phase scheme's metrics have no phase part
    phase_metrics = probability_metrics(np.array([0, 1]), np.eye(4)[[0, 2]], get_scheme("phase4", "radius"))
    assert phase_metrics.phase is None and phase_metrics.accuracy == 0.5
    assert expected_class(probabilities)[4] > expected_class(probabilities)[0]
    ages = np.arange(10.0)
    assert within_sex_spearman(ages * 2, ages, ["F"] * 10) == {"F": pytest.approx(1.0)}
    # per sex, reversed order reads -1, and a sex with under 5 films or one constant score is left out
    sexes = ["F"] * 6 + ["M"] * 4
    assert within_sex_spearman(-ages, ages, sexes) == {"F": pytest.approx(-1.0)}
    assert within_sex_spearman(np.r_[np.ones(6), ages[6:]], ages, ["F"] * 6 + ["M"] * 4) == {}
    assert rank_correlation([1.0, 1.0, 1.0], [1, 2, 3]) is None and rank_correlation([1.0, 2.0], [1, 2]) is None


def _aged_splits(dataset):
    ids = [r.image_id for r in dataset.records]
    return {i: ("train" if k < 8 else "validation" if k < 10 else "test") for k, i in enumerate(ids)}


def test_aged_films_join_training_and_their_test_part_is_never_looked_at(quick_dataset, tmp_path):
    dataset = read_dataset(quick_dataset)
    config = ClassifierConfig(**TINY)
    aged = build_aged_crops(dataset, config, _aged_splits(dataset), progress=False)
    assert aged.crops.shape[1:] == (1, 160, 120) and aged.targets.shape[1] == 11
    assert torch.allclose(aged.targets.sum(1), torch.ones(len(aged.targets)))
    result = train_classifier(dataset, config, tmp_path / "a", progress=False, aged=aged)
    payload = load_checkpoint(tmp_path / "a/classifier.pt", "classifier")
    test_ids = [i for i, s in _aged_splits(dataset).items() if s == "test"]
    assert payload["data"]["aged"] == {"train": 8, "validation": 2, "test": 2}
    assert payload["data"]["aged_test_ids"] == test_ids
    assert "val_aged_spearman" in payload["history"][0] and result.test.phase is not None
    assert result.aged_validation_spearman == payload["metrics"]["aged_validation_spearman"]
    assert ClassifierTrainResult.read(tmp_path / "a") == result  # what metrics.json holds reads back equal
    temperature = payload["calibration"]["temperature"]
    assert 0.05 <= temperature <= 20 and payload["calibration"]["ece_after"] >= 0
    model, _ = load_classifier(tmp_path / "a/classifier.pt")
    assert model.temperature.item() == pytest.approx(temperature)

    # other ages and crops on the test films change nothing
    test = torch.from_numpy(aged.part("test"))
    aged.targets[test] = aged.targets[test].flip(1)
    aged.crops[test] = torch.rand_like(aged.crops[test])
    train_classifier(dataset, config, tmp_path / "b", progress=False, aged=aged)
    again = load_checkpoint(tmp_path / "b/classifier.pt", "classifier")
    for key, value in payload["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key])


def test_off_bone_crops_come_from_training_films_and_join_each_aged_batch(quick_dataset, tmp_path):
    dataset = read_dataset(quick_dataset)
    config = ClassifierConfig(**TINY, off_bone_share=0.5)
    aged = build_aged_crops(dataset, config, _aged_splits(dataset), progress=False)
    assert aged.off_bone is not None and aged.off_bone.shape[1:] == (1, 160, 120)
    assert 0 < len(aged.off_bone) <= len(aged.part("train"))  # one per training film with room off the bones
    # the validation films' own (for the readability threshold), none of the test films'
    assert 0 < len(aged.off_bone_validation) <= len(aged.part("validation"))
    assert off_bone_count(config, aged) == 2 and off_bone_count(replace(config, off_bone_share=0.0), aged) == 0
    assert off_bone_count(replace(config, off_bone_share=0.9), aged) == 3  # at least one film a batch
    # with the other bone's crops, each film's ulna crop joins the radius's off-bone crops, after the moved ones
    other = build_aged_crops(dataset, replace(config, off_bone_other_bone=True), _aged_splits(dataset),
                             progress=False)
    ulna = build_aged_crops(dataset, replace(config, bone="ulna", scheme="stage"), _aged_splits(dataset),
                            progress=False)
    for part, moved, joined in (("train", aged.off_bone, other.off_bone),
                                ("validation", aged.off_bone_validation, other.off_bone_validation)):
        assert torch.equal(joined, torch.cat([moved, ulna.crops[ulna.part(part)]])), part
    train_classifier(dataset, config, tmp_path / "with", progress=False, aged=aged)
    payload = load_checkpoint(tmp_path / "with/classifier.pt", "classifier")
    assert payload["data"]["off_bone_crops"] == {"train": len(aged.off_bone),
                                                 "validation": len(aged.off_bone_validation)}
    assert payload["config"]["off_bone_share"] == 0.5
    # the readability threshold, fitted on the validation films, reads at least the share asked of
    # their crops on the bones; the shares recorded are those the saved model gives
    readable = payload["readability"]
    model, _ = load_classifier(tmp_path / "with/classifier.pt")
    on_bone = class_spread(predict_logits(model, aged.crops[aged.part("validation")]).softmax(1).numpy())
    off_bone = class_spread(predict_logits(model, aged.off_bone_validation).softmax(1).numpy())
    assert readable["max_spread"] >= np.quantile(on_bone, config.readable_min_kept, method="higher") - 1e-4
    assert readable["max_spread"] >= np.quantile(off_bone, config.readable_off_bone_read) - 1e-4
    assert readable["on_bone_read"] == pytest.approx((on_bone <= readable["max_spread"] + 1e-4).mean())
    assert readable["off_bone_read"] == pytest.approx((off_bone <= readable["max_spread"] + 1e-4).mean())
    assert readable["on_bone_read"] >= config.readable_min_kept and 0 <= readable["labelled_read"] <= 1
    assert json.loads((tmp_path / "with/metrics.json").read_text())["readability"] == readable
    # the same films without their off-bone crops train other weights: the crops are used; and
    # without validation off-bone crops no threshold is fitted (every reading is given)
    train_classifier(dataset, config, tmp_path / "without", progress=False,
                     aged=replace(aged, off_bone=None, off_bone_validation=None))
    without = load_checkpoint(tmp_path / "without/classifier.pt", "classifier")
    assert without["data"]["off_bone_crops"] == {"train": 0, "validation": 0} and without["readability"] is None
    assert any(not torch.equal(v, without["state_dict"][k]) for k, v in payload["state_dict"].items())
    with pytest.raises(ValueError, match="off_bone_share must be in"):
        ClassifierConfig(off_bone_share=1.0).validate()
    for name in ("readable_off_bone_read", "readable_min_kept"):
        with pytest.raises(ValueError, match=f"{name} must be in"):
            ClassifierConfig(**{name: 1.5}).validate()


def test_the_detectors_stray_candidates_join_the_off_bone_crops_of_their_own_part(quick_dataset, caplog):
    dataset = read_dataset(quick_dataset)
    splits = _aged_splits(dataset)
    train_film, validation_film, test_film = (next(i for i, s in splits.items() if s == part)
                                              for part in ("train", "validation", "test"))
    # each film's ulna box given as its stray candidate: the radius classifier's stray crop is then
    # that film's ulna crop
    boxes = {r.image_id: r.boxes for r in dataset.records}
    stray = replace(dataset, manifest={**dataset.manifest, "stray_boxes": {
        film: [list(boxes[film]["ulna"])] for film in (train_film, validation_film, test_film)}})
    config = ClassifierConfig(**TINY, off_bone_share=0.5)
    ulna = build_aged_crops(dataset, replace(config, bone="ulna"), splits, progress=False)
    ulna_crop = {film: ulna.crops[ulna.image_ids.index(film)] for film in (train_film, validation_film)}
    assert torch.equal(torch.from_numpy(stray_crops(stray, {train_film}, "radius")[0]), ulna_crop[train_film][0])
    # a dataset boxed without a detector has none, and says so
    assert stray_crops(dataset, {train_film}, "radius") == []
    assert "no stray_boxes in its manifest" in caplog.text
    moved = build_aged_crops(stray, config, splits, progress=False)
    joined = build_aged_crops(stray, replace(config, off_bone_strays=True), splits, progress=False)
    # after the moved crops, the training films' strays for training, the validation films' for the
    # readability threshold; the test film's never
    assert torch.equal(joined.off_bone, torch.cat([moved.off_bone, ulna_crop[train_film][None]]))
    assert torch.equal(joined.off_bone_validation,
                       torch.cat([moved.off_bone_validation, ulna_crop[validation_film][None]]))


def test_the_ranking_loss_rewards_older_films_reading_more_mature():
    ages = torch.tensor([6.0, 9.0, 12.0, 15.0])
    sexes = ["F", "F", "F", "F"]
    ordered = torch.eye(4) * 8  # the class of each film follows its age
    assert ranking_loss(ordered, ages, sexes, margin=1.0) < ranking_loss(ordered.flip(0), ages, sexes, margin=1.0)
    # pairs across sexes, of unknown sex or closer in age than the margin do not count
    assert ranking_loss(ordered.flip(0), ages, ["F", "M", None, None], margin=1.0) == 0.0
    assert ranking_loss(ordered.flip(0), ages, ["F", "M", "F", "M"], margin=6.0) == 0.0
    assert ranking_loss(ordered.flip(0), ages, ["F", "M", "F", "M"], margin=5.0) > 0.0  # 6 vs 12 years
    # its gradient raises the older film's expected class
    logits = torch.zeros(2, 4, requires_grad=True)
    ranking_loss(logits, torch.tensor([8.0, 14.0]), ["M", "M"], margin=1.0).backward()
    assert logits.grad[1, 3] < 0 < logits.grad[0, 3]


def test_mixup_blends_each_film_with_one_of_its_own_sex():
    # girls' crops hold 0 and 1, boys' 10 and 11; ages follow the crop values within each sex
    values = torch.tensor([0.0, 1.0, 10.0, 11.0, 0.0, 1.0, 10.0, 11.0])
    crops = values[:, None, None, None].expand(-1, 1, 4, 3).clone()
    ages = torch.tensor([5.0, 7.0, 12.0, 14.0, 5.0, 7.0, 12.0, 14.0])
    targets = torch.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    sexes = ["F", "F", "M", "M"] * 2
    mixed, mixed_targets, mixed_ages = mixed_films(crops, targets, ages, sexes, 0.4, np.random.default_rng(0))
    value = mixed[:, 0, 0, 0]
    assert torch.equal(mixed, value[:, None, None, None].expand_as(mixed))  # each crop one blend
    girls = torch.tensor([s == "F" for s in sexes])
    assert bool(((value >= 0) & (value <= 1))[girls].all()) and bool(((value >= 10) & (value <= 11))[~girls].all())
    # crop, age and target distribution blended in the same share
    share = torch.where(girls, 1 - value, 11 - value)  # the share of the younger film of the sex
    torch.testing.assert_close(mixed_ages, torch.where(girls, 7 - 2 * share, 14 - 2 * share))
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(8))
    torch.testing.assert_close(mixed_targets[girls, 0], share[girls])
    assert not torch.equal(mixed, crops)  # some films were blended
    with pytest.raises(ValueError, match="aged_mixup"):
        ClassifierConfig(aged_mixup=-1).validate()


def test_aged_films_need_training_and_validation_films(quick_dataset, tmp_path):
    dataset = read_dataset(quick_dataset)
    config = ClassifierConfig(**TINY)
    only_train = {r.image_id: "train" for r in dataset.records}
    aged = build_aged_crops(dataset, config, only_train, progress=False)
    with pytest.raises(ValueError, match="training and validation"):
        train_classifier(dataset, config, tmp_path / "a", progress=False, aged=aged)
    with pytest.raises(ValueError, match="no radius crops of films with an age"):
        build_aged_crops(dataset, config, {}, progress=False)


def test_cli_trains_with_aged_films(quick_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train-classifier", str(quick_dataset), "--out", str(run), "--net", "custom", "--conv", "4c3-8c3",
                 "--fc", "16", "--epochs", "1", "--augment", "1", "--val-fraction", "0", "--test-fraction", "0.25",
                 "--scheme", "stage", "--aged", str(quick_dataset), "--aged-weight", "0.5", "--aged-rank-weight", "2",
                 "--aged-mixup", "0.4", "--off-bone-share", "0.25", "--off-bone-other-bone", "--off-bone-strays",
                 "--quiet"]) == 0
    payload = load_checkpoint(run / "classifier.pt", "classifier")
    assert payload["config"]["aged_weight"] == 0.5 and payload["config"]["aged_rank_weight"] == 2.0
    assert payload["config"]["aged_mixup"] == 0.4 and payload["config"]["off_bone_share"] == 0.25
    assert payload["config"]["off_bone_other_bone"] and payload["config"]["off_bone_strays"]
    assert payload["data"]["off_bone_crops"]["train"] > 0
    assert sum(payload["data"]["aged"].values()) == 12
