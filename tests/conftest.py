"""Shared fixtures: small phantom datasets built by the library's own generator, a bundle trained on
them once per session, and the service over it (with a labelling folder)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session", autouse=True)
def bundle_cache(tmp_path_factory) -> Iterator[Path]:
    """Zip bundles extract into the test session's own cache, and the service keeps its state in
    the session's own folder, not the user's ~/.cache and ~/.local/state."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        yield cache


@pytest.fixture(scope="session")
def quick_dataset(tmp_path_factory) -> Path:
    from drustage.synth.writer import generate_dataset, get_preset

    out = tmp_path_factory.mktemp("quick")
    generate_dataset(out, get_preset("quick"), workers=1, progress=False, preset="quick")
    return out


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/data/real is absent")
    return REAL_DATA


@pytest.fixture
def real_folder_or_none() -> Path | None:
    return REAL_DATA if REAL_DATA.is_dir() else None


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(dataset dir, bundle dir) trained on phantoms of young (R1-R4/U1-U3) and mature (R10-R11/U8-U9) children.

    Its classifiers learn those extremes in seconds; its detector is barely trained (a useful one
    takes ~15 CPU minutes), so tests that need right boxes give them or lower the threshold.
    """
    from dataclasses import replace

    from drustage.data.layout import read_dataset, write_labels
    from drustage.inference.bundle import assemble_bundle
    from drustage.models.config import DetectorConfig
    from drustage.synth.writer import SynthConfig, generate_dataset
    from drustage.training.config import ClassifierConfig
    from drustage.training.classifier import train_classifier
    from drustage.training.config import DetectorTrainConfig
    from drustage.training.detector import train_detector

    root = tmp_path_factory.mktemp("e2e")
    young = generate_dataset(root / "young", SynthConfig(count=40, seed=11, age_range=(4.0, 7.5), image_scale=0.4),
                             workers=2, progress=False)
    old = generate_dataset(root / "old", SynthConfig(count=40, seed=12, age_range=(17.5, 19.0), image_scale=0.4),
                           workers=2, progress=False)
    # one dataset over both folders' images
    records = [replace(r, image_id=f"y{r.image_id}", file=f"young/{r.file}") for r in young] + \
              [replace(r, image_id=f"o{r.image_id}", file=f"old/{r.file}") for r in old]
    write_labels(root, records)
    dataset = read_dataset(root)
    detector = DetectorTrainConfig(model=DetectorConfig(min_size=160, max_size=200, representation_size=256),
                                   iterations=4, validate_every=4, warmup=1, test_fraction=0.1, val_fraction=0.1)
    train_detector(dataset, detector, root / "det", workers=2, progress=False)
    for bone in ("radius", "ulna"):
        config = ClassifierConfig(bone=bone, scheme="phase4", net="custom", conv_spec="16c3-32c3-32c3-64c3",
                                  fc_spec="128", dropout=0.2, epochs=15, augment=10, lr=3e-4, test_fraction=0.2,
                                  val_fraction=0.1)
        train_classifier(dataset, config, root / bone, progress=False)
    assemble_bundle(root / "bundle", root / "det/detector.pt", root / "radius/classifier.pt",
                    root / "ulna/classifier.pt", archive=True)
    return root, root / "bundle"


@pytest.fixture(scope="session")
def withheld_bundle(trained, tmp_path_factory) -> Path:
    """The session bundle with readability limits in its manifest that withhold every radius
    reading (no spread is below 0) and no ulna reading."""
    import json

    bundle = tmp_path_factory.mktemp("withheld") / "bundle"
    shutil.copytree(trained[1], bundle)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["radius"]["readability"] = {"max_spread": -1.0}
    manifest["ulna"]["readability"] = {"max_spread": 99.0}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    return bundle


def _bone_result(bone, stage_index, confidence=0.9):
    from drustage.stages import get_scheme

    scheme = get_scheme("stage", bone)
    p = np.full(scheme.num_classes, (1 - confidence) / (scheme.num_classes - 1))
    p[stage_index - 1] = confidence
    name = scheme.classes[stage_index - 1]
    return {"found": True, "scheme": "stage", "prediction": name, "phase": scheme.phase_of_class(stage_index - 1),
            "confidence": confidence, "phase_confidence": confidence, "box": [10, 10, 60, 70],
            "probabilities": dict(zip(scheme.classes, p.tolist()))}


def _aged_case(quick_dataset, wrong_flagged=True):
    """Films of the quick phantoms with 'bone ages' spread 2-17 y, read as their age implies, except
    two read mature at their young age: one flagged for review (its radius box scored 0.6), one
    not. Even films' boxes are detected, odd films' given."""
    from drustage.data.aged_films import AgedFilm
    from drustage.data.layout import read_dataset
    from drustage.growth import expected_stage_for_age

    dataset = read_dataset(quick_dataset)
    films, reports = [], []
    for k, record in enumerate(dataset.records):
        path = dataset.path_of(record)
        age = 2 + 15 * k / (len(dataset.records) - 1)
        sex = "FM"[k % 2]
        films.append(AgedFilm(path.name, path, sex, age))
        results = {bone: _bone_result(bone, expected_stage_for_age(bone, age, sex).index)
                   for bone in ("radius", "ulna")}
        flagged = False
        if k in (0, 1):
            results["radius"] = _bone_result("radius", 11, 0.99)
            flagged = k == 0 and wrong_flagged
        if k % 2 == 0:  # detected boxes (the others given): film 0's radius box is uncertain, as wrong ones are
            for bone, result in results.items():
                result["detection_score"] = 0.6 if (k, bone) == (0, "radius") else 0.99
        reports.append({"source": path.name, **results, "needs_review": flagged, "review_reasons": []})
    return films, reports


@pytest.fixture
def aged_case(quick_dataset):
    """``aged_case(wrong_flagged=True)`` -> (films, reports): see ``_aged_case``."""
    return lambda wrong_flagged=True: _aged_case(quick_dataset, wrong_flagged)


@pytest.fixture
def label_dir(trained, tmp_path):
    """A plain folder of four phantom radiographs (no labels yet)."""
    root, _ = trained
    folder = tmp_path / "to-label"
    folder.mkdir()
    for group in ("young", "old"):
        for source in sorted((root / group / "images").glob("*.png"))[:2]:
            shutil.copy(source, folder / f"{group}-{source.name}")
    return folder


@pytest.fixture
def app(trained, label_dir):
    from drustage.service.app import ServiceConfig, create_app

    # The session bundle's detector is barely trained: threshold 0 keeps its best boxes so the
    # page and API always have boxes to show.
    return create_app(ServiceConfig(model=trained[1], label_dir=label_dir, detection_threshold=0.0))


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client
