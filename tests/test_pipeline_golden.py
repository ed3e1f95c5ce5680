"""``drustage predict``'s answers on seeded phantoms, from seeded (untrained) checkpoints, against a
stored result (``golden/predictions.json``): a change anywhere between the file and the JSON
(loading, windowing, downscaling, the detector's post-processing, cropping, mirroring, the
classifiers, reading the phase, the review rules) shows here, while a refactor leaves it as it was.

Untrained networks keep the checkpoints out of the repository (they are rebuilt from the seed) and
still give every film its own boxes and probabilities. Numbers are compared to 1e-4 (boxes to
1e-3 px), not bit for bit: CPUs with other vector units round convolutions differently in the last
bits. Regenerate only for an intended change of the answers:
``DRUSTAGE_WRITE_GOLDEN=1 python -m pytest tests/test_pipeline_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from answers import assert_same
from drustage.cli import main

GOLDEN = Path(__file__).parent / "golden" / "predictions.json"
# what depends on the library versions or the machine, not on the answers
UNCOMPARED = {"model_fingerprint", "source", "files"}


def seeded_bundle(folder: Path) -> Path:
    import torch

    from drustage.data.crops import CROP_SIZE
    from drustage.inference.bundle import assemble_bundle
    from drustage.inference.checkpoints import save_checkpoint
    from drustage.models.classifier import StageClassifier
    from drustage.models.config import DetectorConfig
    from drustage.models.detector import build_detector
    from drustage.models.spec import parse_net_spec
    from drustage.stages import get_scheme
    from drustage.training.config import ClassifierConfig, DetectorTrainConfig

    torch.manual_seed(0)
    model = DetectorConfig(min_size=160, max_size=200, representation_size=64)
    save_checkpoint(folder / "detector.pt", "detector", build_detector(model).state_dict(),
                    config=json.loads(json.dumps(DetectorTrainConfig(model=model).to_dict())))
    for bone in ("radius", "ulna"):
        config = ClassifierConfig(bone=bone, scheme="stage", net="custom", conv_spec="8c3-16c3-16c3", fc_spec="32")
        scheme = get_scheme(config.scheme, bone)
        network = StageClassifier(parse_net_spec(config.conv_spec, config.fc_spec), scheme.num_classes,
                                  dropout=config.dropout, standardize=config.standardize)
        save_checkpoint(folder / f"{bone}.pt", "classifier", network.state_dict(),
                        config=json.loads(json.dumps(config.to_dict())), scheme=scheme.to_dict(),
                        input_size=list(CROP_SIZE))
    return assemble_bundle(folder / "bundle", folder / "detector.pt", folder / "radius.pt", folder / "ulna.pt")


def predictions(tmp_path: Path) -> dict:
    """Each phantom's answers: detected (threshold 0, so the untrained detector's best pair is
    kept), and read from its true boxes given as a CSV."""
    from drustage.data.layout import read_dataset
    from drustage.synth.writer import SynthConfig, generate_dataset

    bundle = seeded_bundle(tmp_path)
    generate_dataset(tmp_path / "phantoms", SynthConfig(count=3, seed=21, image_scale=0.4), workers=1, progress=False)
    dataset = read_dataset(tmp_path / "phantoms")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("file,bone,x1,y1,x2,y2\n" + "".join(
        f"{dataset.path_of(r).name},{bone},{','.join(str(v) for v in box)}\n"
        for r in dataset.records for bone, box in r.boxes.items()))
    answers = {}
    for mode, extra in (("detected", ["--threshold", "0"]), ("given", ["--boxes", str(boxes)])):
        out = tmp_path / mode
        assert main(["predict", str(tmp_path / "phantoms" / "images"), "--model", str(bundle), "--out", str(out),
                     "--sex", "F", "--age", "9", "--quiet", *extra]) == 0
        for path in sorted(out.glob("*.json")):
            answers[f"{mode}/{path.stem}"] = {k: v for k, v in json.loads(path.read_text()).items()
                                              if k not in UNCOMPARED}
    return answers


def test_predict_answers_match_the_stored_result(tmp_path):
    answers = predictions(tmp_path)
    if os.environ.get("DRUSTAGE_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
    stored = json.loads(GOLDEN.read_text())
    assert len(stored) == 6 and any(a["needs_review"] for a in stored.values())
    assert_same(answers, stored)
