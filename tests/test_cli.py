import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from drustage.cli import main
from drustage.data.layout import read_dataset


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "drustage.cli", *args], capture_output=True, text=True)


def test_help_does_not_import_torch():
    code = "import sys; from drustage.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert run_cli("--help").returncode == 0


def test_training_options_leave_the_configs_defaults_and_override_what_is_given():
    from drustage.cli import build_parser
    from drustage.cli.training import _classifier_config, _detector_config
    from drustage.models.config import DetectorConfig
    from drustage.training.config import ClassifierConfig, DetectorTrainConfig

    parse = build_parser().parse_args
    assert _classifier_config(parse(["train-classifier", "data", "--out", "run"])) == ClassifierConfig()
    assert _detector_config(parse(["train-detector", "data", "--out", "run"])) == DetectorTrainConfig()
    given = _classifier_config(parse(["train-classifier", "data", "--out", "run", "--net", "custom", "--conv", "8c3",
                                      "--fc", "16", "--no-standardize", "--lr", "0.003", "--per-class-cap", "peak=5",
                                      "--no-mixed-precision"]))
    assert given == ClassifierConfig(net="custom", conv_spec="8c3", fc_spec="16", standardize=False, lr=0.003,
                                     per_class_cap={"peak": 5}, mixed_precision=False)
    given = _detector_config(parse(["train-detector", "a", "b", "--out", "run", "--max-size", "640",
                                    "--test-fraction", "0.1", "0.4", "--no-augment", "--no-mixed-precision"]))
    assert given == DetectorTrainConfig(model=DetectorConfig(max_size=640), test_fraction=[0.1, 0.4], augment=False,
                                        mixed_precision=False)
    help_text = build_parser()._subparsers._group_actions[0].choices["train-classifier"].format_help()
    assert f"(default {ClassifierConfig.lr})" in help_text  # the help shows the config's own default


def test_synth_writes_dataset_and_sheet(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "--preset", "quick", "--count", "5", "--seed", "3", "--out", str(out),
                 "--workers", "1", "--quiet"]) == 0
    dataset = read_dataset(out)
    assert len(dataset.records) == 5 and all(len(r.boxes) == 2 for r in dataset.records)
    assert Image.open(out / "stage_sheet.png").size[0] > 500
    assert Image.open(dataset.path_of(dataset.records[0])).mode.startswith("I;16")
    assert "stage counts" in capsys.readouterr().out


def test_synth_same_seed_same_pixels(tmp_path):
    for name in ("a", "b"):
        main(["synth", "--count", "2", "--seed", "9", "--out", str(tmp_path / name), "--workers", "2",
              "--quiet", "--no-sheet"])
    a = np.asarray(Image.open(tmp_path / "a/images/phantom-00001.png"))
    b = np.asarray(Image.open(tmp_path / "b/images/phantom-00001.png"))
    np.testing.assert_array_equal(a, b)


def test_synth_dicom(tmp_path):
    out = tmp_path / "dcm"
    assert main(["synth", "--count", "2", "--out", str(out), "--format", "dicom", "--workers", "1",
                 "--quiet", "--no-sheet"]) == 0
    record = read_dataset(out).records[0]
    assert record.file.endswith(".dcm")
    info = run_cli("info", str(out / record.file))
    assert info.returncode == 0 and json.loads(info.stdout)["format"] == "dicom"


def test_bad_input_gives_one_line_error(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run_cli("info", str(bad))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "broken.png" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_cli("sheet", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.png"))
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "s.png").exists()
    unknown = run_cli("synth", "--preset", "huge", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 1 and "quick, paper" in unknown.stderr
    tilted = run_cli("synth", "--tilt", "90", "--out", str(tmp_path / "tilted"))
    assert tilted.returncode == 1 and "tilt must be 0-45 degrees, got 90.0" in tilted.stderr
    assert not (tmp_path / "tilted").exists()


def test_import_builds_a_trainable_layout(tmp_path, quick_dataset):
    source = read_dataset(quick_dataset)
    images = tmp_path / "export"
    images.mkdir()
    rows, boxes = ["date,serial,radius,ulna,laterality"], ["file,bone,x1,y1,x2,y2"]
    for i, record in enumerate(source.records[:4]):
        name = f"20240105_{i + 1:04d}.png"
        (images / name).write_bytes(source.path_of(record).read_bytes())
        stages = f"{record.stages['radius'].code},{record.stages['ulna'].code}"
        rows.append(f"2024-01-05,{i + 1},{stages},{record.laterality}")
        for bone, box in record.boxes.items():
            boxes.append(f"{name},{bone}," + ",".join(f"{v:.1f}" for v in box))
    rows.append("2024-01-06,77,R7,U5,L")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "boxes.csv").write_text("\n".join(boxes) + "\n")
    out = tmp_path / "imported"
    result = run_cli("import", str(images), "--labels", str(tmp_path / "labels.csv"), "--key", "date,serial",
                     "--radius-column", "radius", "--ulna-column", "ulna", "--boxes", str(tmp_path / "boxes.csv"),
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1 sheet row(s) matched no image: rows 6" in result.stdout
    dataset = read_dataset(out)
    assert len(dataset.records) == 4
    assert [r.stages["radius"] for r in dataset.records] == [r.stages["radius"] for r in source.records[:4]]
    assert all(len(r.boxes) == 2 and r.laterality in ("L", "R") for r in dataset.records)
    assert not any(dataset.path_of(r).is_symlink() for r in dataset.records)
    linked = tmp_path / "linked"
    for _ in range(2):  # a second import over the first replaces its links
        result = run_cli("import", str(images), "--boxes", str(tmp_path / "boxes.csv"), "--out", str(linked), "--link")
        assert result.returncode == 0, result.stderr
    linked_dataset = read_dataset(linked)
    assert [r.boxes for r in linked_dataset.records] == [r.boxes for r in dataset.records]
    for record in linked_dataset.records:
        path = linked_dataset.path_of(record)
        assert path.is_symlink() and path.resolve().parent == images.resolve()
    bad_key = run_cli("import", str(images), "--labels", str(tmp_path / "labels.csv"), "--key", "day",
                      "--radius-column", "radius", "--ulna-column", "ulna", "--out", str(tmp_path / "x"))
    assert bad_key.returncode == 1 and "key column(s) day" in bad_key.stderr
    assert not (tmp_path / "x").exists()


def test_import_reads_a_sheet_of_ages_without_stages_for_aged_training(tmp_path, quick_dataset):
    source = read_dataset(quick_dataset)
    images = tmp_path / "films"
    images.mkdir()
    rows = ["file,sex,boneage_months"]
    for i, record in enumerate(source.records):
        (images / f"{i:03d}.png").write_bytes(source.path_of(record).read_bytes())
        rows.append(f"{i:03d}.png,{'F' if i % 2 else 'M'},{150 + 6 * i}")
    (tmp_path / "ages.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "aged"
    result = run_cli("import", str(images), "--labels", str(tmp_path / "ages.csv"), "--key", "file", "--out", str(out))
    assert result.returncode == 0, result.stderr
    dataset = read_dataset(out)
    assert [r.age_years for r in dataset.records] == pytest.approx([(150 + 6 * i) / 12 for i in range(12)], abs=1e-4)
    assert [r.sex for r in dataset.records] == ["M", "F"] * 6 and not any(r.stages for r in dataset.records)
    # an age that is no age stops the import, naming the row's image and the value
    (tmp_path / "bad.csv").write_text("file,sex,boneage_months\n000.png,F,-12\n")
    bad = run_cli("import", str(images), "--labels", str(tmp_path / "bad.csv"), "--key", "file",
                  "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and "000.png" in bad.stderr and "boneage_months '-12' is not an age" in bad.stderr
    assert not (tmp_path / "bad").exists()  # nothing half-written
    # a sheet with neither stages nor an age says what it expected
    (tmp_path / "none.csv").write_text("file,sex\n000.png,F\n")
    none = run_cli("import", str(images), "--labels", str(tmp_path / "none.csv"), "--key", "file",
                   "--out", str(tmp_path / "none"))
    assert none.returncode == 1 and "no column 'radius_stage' (nor an age column" in none.stderr


@pytest.mark.real
def test_info_on_real_images(real_data):
    files = sorted((real_data / "wrist-16bit" / "images").glob("*.png"))
    result = run_cli("info", *map(str, files))
    assert result.returncode == 0
    assert [json.loads(line)["bit_depth"] for line in result.stdout.splitlines()] == [16] * len(files)
