"""ONNX export and the ONNX Runtime path: same boxes (0.5 px) and probabilities (1e-4) as PyTorch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from drustage.cli import main
from drustage.imaging import load_radiograph
from drustage.inference.bundle import BundleError, load_bundle
from drustage.inference.onnx import ONNX_MANIFEST, default_onnx_dir, export_onnx
from drustage.io_utils import file_sha256
from drustage.pipeline import Predictor
from drustage.stages import BONES


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """A copy of the session bundle with its ONNX export in BUNDLE/onnx."""
    bundle_dir = tmp_path_factory.mktemp("onnx") / "bundle"
    shutil.copytree(trained[1], bundle_dir)
    assert main(["export-onnx", str(bundle_dir)]) == 0
    return bundle_dir


def _phantoms(trained, per_group=3):
    root, _ = trained
    return [p for group in ("young", "old") for p in sorted((root / group / "images").glob("*.png"))[:per_group]]


def test_onnx_matches_torch(exported, trained):
    bundle = load_bundle(exported)
    eager = Predictor(bundle, detection_threshold=0.0)
    onnx = Predictor(bundle, detection_threshold=0.0, runtime="onnx")
    for path in _phantoms(trained):
        radiograph = load_radiograph(path)
        expected, got = eager.predict(radiograph).to_dict(), onnx.predict(radiograph).to_dict()
        for bone in BONES:
            assert np.abs(np.subtract(got[bone]["box"], expected[bone]["box"])).max() <= 0.5, path
            assert got[bone]["detection_score"] == pytest.approx(expected[bone]["detection_score"], abs=1e-4)
            p, q = got[bone]["probabilities"], expected[bone]["probabilities"]
            assert p.keys() == q.keys() and max(abs(p[k] - q[k]) for k in p) <= 1e-4
            assert got[bone]["prediction"] == expected[bone]["prediction"]


def test_classifier_probabilities_match_for_a_batch(exported, trained):
    bundle = load_bundle(exported)
    eager, onnx = Predictor(bundle), Predictor(bundle, runtime="onnx")
    crops = np.random.default_rng(0).random((5, 128, 96), dtype=np.float32)
    for bone in BONES:
        expected = eager.classifiers[bone].probabilities(crops)
        got = onnx.classifiers[bone].probabilities(crops)
        assert got.shape == expected.shape == (5, len(eager.schemes[bone].classes))
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_missing_or_stale_export_is_refused(exported, trained, tmp_path):
    with pytest.raises(BundleError, match="export-onnx"):
        Predictor(load_bundle(trained[1]), runtime="onnx")
    stale = tmp_path / "bundle"
    shutil.copytree(exported, stale)
    manifest = json.loads((stale / "onnx" / ONNX_MANIFEST).read_text())
    (stale / "onnx" / ONNX_MANIFEST).write_text(json.dumps({**manifest, "bundle_fingerprint": "0" * 64}))
    with pytest.raises(BundleError, match="another bundle version"):
        Predictor(load_bundle(stale), runtime="onnx")
    (stale / "onnx" / ONNX_MANIFEST).write_text(json.dumps(manifest))
    # the two classifiers swapped: each file is checked against the export's record of it
    radius, ulna = (stale / "onnx" / "radius.onnx").read_bytes(), (stale / "onnx" / "ulna.onnx").read_bytes()
    (stale / "onnx" / "radius.onnx").write_bytes(ulna)
    (stale / "onnx" / "ulna.onnx").write_bytes(radius)
    with pytest.raises(BundleError, match="radius.onnx: not the radius network this export recorded"):
        Predictor(load_bundle(stale), runtime="onnx")
    (stale / "onnx" / "radius.onnx").write_bytes(b"not a model")
    (stale / "onnx" / "ulna.onnx").write_bytes(ulna)
    recorded = {**manifest["sha256"], "radius": file_sha256(stale / "onnx" / "radius.onnx")}
    (stale / "onnx" / ONNX_MANIFEST).write_text(json.dumps({**manifest, "sha256": recorded}))
    with pytest.raises(BundleError, match="radius.onnx: not a usable ONNX model"):
        Predictor(load_bundle(stale), runtime="onnx")
    for broken in ([manifest], {**manifest, "detector_max_side": "big"}):
        (stale / "onnx" / ONNX_MANIFEST).write_text(json.dumps(broken))
        with pytest.raises(BundleError):
            Predictor(load_bundle(stale), runtime="onnx")


def test_zip_bundles_export_beside_the_archive(trained, tmp_path):
    archive = tmp_path / "bundle.zip"
    shutil.copy(trained[1].with_suffix(".zip"), archive)
    bundle = load_bundle(archive)
    assert export_onnx(bundle) == default_onnx_dir(bundle) == tmp_path / "bundle.onnx"
    assert Predictor(load_bundle(archive), runtime="onnx").runtime == "onnx"


def test_cli_predict_onnx_with_workers_gives_the_torch_answers(exported, trained, tmp_path, capsys):
    paths = [str(p) for p in _phantoms(trained, 2)]
    assert main(["predict", *paths, "--model", str(exported), "--out", str(tmp_path / "torch"), "--quiet"]) == 0
    assert main(["predict", *paths, "--model", str(exported), "--out", str(tmp_path / "onnx"), "--quiet",
                 "--runtime", "onnx", "--workers", "2"]) == 0
    for path in paths:
        name = path.rsplit("/", 1)[1].replace(".png", ".json")
        eager = json.loads((tmp_path / "torch" / name).read_text())
        onnx = json.loads((tmp_path / "onnx" / name).read_text())
        for bone in BONES:
            assert onnx[bone]["prediction"] == eager[bone]["prediction"]
            assert onnx[bone]["found"] == eager[bone]["found"]
    # workers return results in input order
    rows = [line.split(",")[0] for line in (tmp_path / "onnx" / "summary.csv").read_text().splitlines()[1:]]
    assert rows == [path.rsplit("/", 1)[1] for path in paths]


def test_a_batch_normalised_bundle_exports_with_its_running_statistics(trained, tmp_path):
    from drustage.training.classifier import train_classifier
    from drustage.training.config import ClassifierConfig
    from drustage.data.layout import read_dataset
    from drustage.inference.bundle import assemble_bundle

    root = trained[0]
    for bone in BONES:
        config = ClassifierConfig(bone=bone, scheme="phase4", net="custom", conv_spec="8c3-16c3", fc_spec="16",
                                  batch_norm=True, lr=1e-3, epochs=2, augment=2, test_fraction=0.2, val_fraction=0.1)
        train_classifier(read_dataset(root), config, tmp_path / bone, progress=False)
    bundle_dir = assemble_bundle(tmp_path / "bundle", root / "det/detector.pt", tmp_path / "radius/classifier.pt",
                                 tmp_path / "ulna/classifier.pt")
    export_onnx(load_bundle(bundle_dir))
    bundle = load_bundle(bundle_dir)
    eager, onnx = Predictor(bundle), Predictor(bundle, runtime="onnx")
    crops = np.random.default_rng(1).random((6, 128, 96), dtype=np.float32)
    for bone in BONES:
        # the exported graph normalises with the trained running statistics, not the batch's
        np.testing.assert_allclose(onnx.classifiers[bone].probabilities(crops),
                                   eager.classifiers[bone].probabilities(crops), atol=1e-4)
        np.testing.assert_allclose(onnx.classifiers[bone].probabilities(crops[:1]),
                                   eager.classifiers[bone].probabilities(crops)[:1], atol=1e-4)
