import json
import resource
import signal

import numpy as np
import pytest
import torch

from drustage.cli import main
from drustage.data.crops import crop_region, extract_context_crops, needs_mirror
from drustage.data.layout import read_dataset
from drustage.evaluation.classification import ClassificationMetrics, classification_metrics
from drustage.imaging import load_radiograph
from drustage.inference.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from drustage.inference.classifier import load_classifier, window_batch
from drustage.training.config import ClassifierConfig
from drustage.training.classifier import augmented_windows, train_classifier
from drustage.training.crop_sets import balanced_indices

TINY = dict(net="custom", conv_spec="4c3-8c3-8c3", fc_spec="16", epochs=2, augment=2, test_fraction=0.25,
            val_fraction=0.0, batch_size=8, scheme="phase4")


def test_centre_window_equals_the_standard_crop(quick_dataset):
    dataset = read_dataset(quick_dataset)
    record = dataset.records[1]
    context = extract_context_crops(dataset, progress=False)[record.image_id]["radius"]
    window = window_batch(torch.from_numpy(context)[None, None], None, 0.0, (1.0, 1.0))[0, 0].numpy()
    image = load_radiograph(dataset.path_of(record)).image
    direct = crop_region(image, record.boxes["radius"], needs_mirror(record.laterality))
    assert np.corrcoef(window.ravel(), direct.ravel())[0, 1] > 0.97


def test_augmented_windows_differ_but_keep_shape():
    context = torch.rand(4, 1, 160, 120)
    generator = torch.Generator().manual_seed(0)
    moved = window_batch(context, generator, 0.06, (0.9, 1.1))
    fixed = window_batch(context, None, 0.0, (1.0, 1.0))
    assert moved.shape == fixed.shape == (4, 1, 128, 96)
    assert not torch.allclose(moved, fixed)


def test_turned_windows_keep_a_circle_round():
    # a disc at the centre of the context: a turn in pixels leaves it as it is, a turn in the
    # normalised coordinates (which stretch x and y differently) would squash it into an ellipse
    rows, cols = np.mgrid[:160, :120]
    disc = torch.from_numpy(((rows - 79.5) ** 2 + (cols - 59.5) ** 2 < 40 ** 2).astype(np.float32))
    bar = torch.zeros(160, 120)
    bar[:, 55:65] = 1.0
    context = torch.stack([disc, bar])[:, None]
    fixed = window_batch(context, None, 0.0, (1.0, 1.0))
    turned = window_batch(context, torch.Generator().manual_seed(0), 0.0, (1.0, 1.0), max_rotation=40.0)
    assert (turned[0] - fixed[0]).abs().mean() < 0.01
    assert (turned[1] - fixed[1]).abs().mean() > 0.05  # a vertical bar is turned
    assert torch.equal(window_batch(context, torch.Generator().manual_seed(0), 0.0, (1.0, 1.0)), fixed)


def test_gamma_bends_the_exposure_curve_and_keeps_the_order_of_intensities():
    context = torch.linspace(0, 1, 160 * 120).reshape(1, 1, 160, 120).repeat(8, 1, 1, 1)
    config = ClassifierConfig(max_shift=0.0, scale_range=(1.0, 1.0), max_gamma=1.5)
    bent = augmented_windows(context, config, torch.Generator().manual_seed(0))
    plain = augmented_windows(context, config, None)
    assert bent.min() >= 0 and bent.max() <= 1
    mid = plain[0, 0, 64, 48]
    values = bent[:, 0, 64, 48]
    assert (values > mid + 0.01).any() and (values < mid - 0.01).any()  # darker and brighter curves
    assert all(torch.all(torch.diff(b[0].flatten()[::97]) >= 0) for b in bent)  # monotonic in the input
    with pytest.raises(ValueError, match="max_gamma"):
        ClassifierConfig(max_gamma=0.5).validate()
    with pytest.raises(ValueError, match="max_rotation"):
        ClassifierConfig(max_rotation=90).validate()


def test_balanced_indices_oversample_to_majority():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 6)
    picked = balanced_indices(labels, np.random.default_rng(0))
    assert np.bincount(labels[picked]).tolist() == [10, 10, 10]
    assert set(np.flatnonzero(labels == 1)) <= set(picked)


def test_metrics_match_definitions():
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 3, 3])
    metrics = classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert metrics.accuracy == pytest.approx(6 / 8)
    assert metrics.within_one_accuracy == pytest.approx(7 / 8)
    low, high = metrics.accuracy_ci95
    assert low < 0.75 < high
    assert metrics.per_class["b"].precision == pytest.approx(2 / 3)
    assert metrics.confusion_matrix[2] == (1, 0, 1, 0)  # true c: read a once, c once
    assert metrics.kappa_quadratic < metrics.accuracy + 0.3 and -1 <= metrics.kappa <= 1
    assert metrics.ece is None  # no confidences given
    assert classification_metrics(y_true, y_pred, "abcd", np.full(8, 0.75)).ece == pytest.approx(0.0)
    assert ClassificationMetrics.from_dict(json.loads(json.dumps(metrics.to_dict()))) == metrics
    assert metrics.summary().startswith("accuracy 0.750 (95% CI ") and metrics.summary().endswith("n=8")


def test_training_writes_everything_and_is_reproducible(quick_dataset, tmp_path):
    dataset = read_dataset(quick_dataset)
    torch.manual_seed(123)
    caller_state = torch.get_rng_state()
    result = train_classifier(dataset, ClassifierConfig(**TINY), tmp_path / "a", progress=False)
    assert torch.equal(torch.get_rng_state(), caller_state)  # the run seeds its own generators, not the caller's
    torch.manual_seed(7)  # and another caller state does not change the run
    train_classifier(dataset, ClassifierConfig(**TINY), tmp_path / "b", progress=False)
    for name in ("classifier.pt", "metrics.json", "confusion.png", "curves.png", "curves.csv"):
        assert (tmp_path / "a" / name).is_file()
    a = torch.load(tmp_path / "a/classifier.pt", weights_only=True)
    b = torch.load(tmp_path / "b/classifier.pt", weights_only=True)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key])
    assert a["scheme"]["classes"] == ["pre-peak", "peak", "deceleration", "mature"]
    assert a["config"]["conv_spec"] == "4c3-8c3-8c3" and a["input_size"] == [128, 96]
    assert {"torch", "torchvision", "drustage"} <= set(a["versions"])
    assert len((tmp_path / "a/curves.csv").read_text().splitlines()) == 3
    assert result.test.n == len(a["data"]["test_ids"]) and a["metrics"] == result.to_dict()
    model, payload = load_classifier(tmp_path / "a/classifier.pt")
    assert model(torch.rand(1, 1, 128, 96)).shape == (1, 4)
    assert a["config"]["standardize"] is True and type(model.normalize).__name__ == "InstanceStandardize"
    # a checkpoint from before the option (no key) was trained on raw crops and loads that way
    del a["config"]["standardize"]
    torch.save(a, tmp_path / "legacy.pt")
    assert isinstance(load_classifier(tmp_path / "legacy.pt")[0].normalize, torch.nn.Identity)


def test_batch_norm_and_a_cosine_schedule_train_and_load(quick_dataset, tmp_path):
    dataset = read_dataset(quick_dataset)
    config = ClassifierConfig(**{**TINY, "epochs": 3}, batch_norm=True, lr_schedule="cosine", lr=1e-3)
    train_classifier(dataset, config, tmp_path / "bn", progress=False)
    model, payload = load_classifier(tmp_path / "bn/classifier.pt")
    assert payload["config"]["batch_norm"] is True
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 3
    # the running statistics are part of the checkpoint: the loaded model reads as the trained one
    trained = torch.load(tmp_path / "bn/classifier.pt", weights_only=True)["state_dict"]
    assert any(key.endswith("running_var") for key in trained)
    assert not torch.allclose(trained["features.1.running_var"], torch.ones(4))
    rates = [row["lr"] for row in payload["history"]]
    assert rates[0] < 1e-3 and rates == sorted(rates, reverse=True) and rates[-1] < 1e-9  # annealed to zero
    constant = ClassifierConfig(**TINY)
    train_classifier(dataset, constant, tmp_path / "flat", progress=False)
    assert {row["lr"] for row in load_classifier(tmp_path / "flat/classifier.pt")[1]["history"]} == {constant.lr}
    with pytest.raises(ValueError, match="lr_schedule"):
        ClassifierConfig(lr_schedule="step").validate()


def test_cli_train_and_evaluate(quick_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train-classifier", str(quick_dataset), "--out", str(run), "--net", "custom", "--conv", "4c3-8c3",
            "--fc", "16", "--epochs", "1", "--augment", "1", "--val-fraction", "0", "--test-fraction", "0.25",
            "--bone", "ulna", "--scheme", "stage", "--batch-norm", "--lr-schedule", "cosine", "--optimizer", "adamw",
            "--weight-decay", "0.01", "--max-rotation", "10", "--max-gamma", "1.5", "--quiet"]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    config = load_classifier(run / "classifier.pt")[1]["config"]
    assert (config["batch_norm"], config["lr_schedule"], config["optimizer"], config["weight_decay"],
            config["max_rotation"], config["max_gamma"]) == (True, "cosine", "adamw", 0.01, 10.0, 1.5)
    assert main(["evaluate-classifier", str(run / "classifier.pt"), str(quick_dataset), "--out",
                 str(tmp_path / "eval"), "--all", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["n"] == 12 and len(metrics["classes"]) == 9


def test_bad_spec_and_checkpoints(quick_dataset, tmp_path, capsys):
    assert main(["train-classifier", str(quick_dataset), "--out", str(tmp_path / "r"), "--net", "custom",
                 "--conv", "4c3-8q3", "--fc", "16"]) == 1
    assert "'8q3' at position 2" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable"):
        load_checkpoint(corrupt, "classifier")
    other = save_checkpoint(tmp_path / "det.pt", "detector", {})
    with pytest.raises(CheckpointError, match="expected drustage-classifier"):
        load_classifier(other)
    assert main(["evaluate-classifier", str(corrupt), str(quick_dataset), "--out", str(tmp_path / "e")]) == 1
    assert "corrupt.pt" in capsys.readouterr().err
    # too few crops for a test split: said plainly, before any training, and nothing written
    assert main(["train-classifier", str(quick_dataset), "--out", str(tmp_path / "few"), "--net", "custom",
                 "--conv", "4c3", "--fc", "8", "--test-fraction", "0.01", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "radius crops under the phase4 scheme leave none for the test split at 0.01" in err
    assert "Traceback" not in err and not (tmp_path / "few" / "metrics.json").exists()


def test_a_checkpoint_the_disk_cannot_hold_is_reported_and_leaves_nothing(tmp_path):
    # a file-size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, limits[1]))
    try:
        with pytest.raises(CheckpointError, match=r"big.pt: checkpoint not written \(.*\); \d+ MB free"):
            save_checkpoint(tmp_path / "big.pt", "classifier", {"weight": torch.zeros(2**20)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor its temporary file
