"""The project's best detector, rebuilt in one command from a clean clone with ../shared beside it:

    python recipes/best_detector.py [--demo runs/demo] [--out runs/best_detector]

It runs the demo (its finished steps are reused), then goes on from the demo's detector: the
same phantoms, boxed real films and splits, another 1,200 iterations at a quarter of the
learning rate with half of every batch real (the demo: a third). Both detectors are then scored
on the same held-out real films of every project box file, printed as one table, and the best
detector is bundled with the demo's classifiers in ``OUT/bundle``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from drustage.data.layout import read_dataset
from drustage.demo import default_real_boxes, real_folder_name, run_demo
from drustage.inference.bundle import assemble_bundle
from drustage.inference.checkpoints import load_checkpoint
from drustage.models.config import DetectorConfig
from drustage.data.detection import boxed_records
from drustage.evaluation.detection import combined_detection_metrics, evaluate_detector, held_out_ids
from drustage.training.config import DetectorTrainConfig
from drustage.training.detector import train_detector

ITERATIONS = 1200
LR_SHARE = 0.25  # of the demo's learning rate
REAL_BATCH_SHARE = 0.5


def best_config(demo_config: dict, real_counts: list[int], start: Path) -> DetectorTrainConfig:
    """The demo's detector settings (so every dataset splits as it did), continued from its weights."""
    model = DetectorConfig(**demo_config["model"])
    config = DetectorTrainConfig(**{**demo_config, "model": model})
    real_weights = [REAL_BATCH_SHARE * n / sum(real_counts) for n in real_counts]
    return replace(config, iterations=ITERATIONS, lr=config.lr * LR_SHARE, weights=str(start), warmup=20,
                   validate_every=ITERATIONS // 3, dataset_weights=[1 - REAL_BATCH_SHARE, *real_weights])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="runs/demo")
    parser.add_argument("--out", default="runs/best_detector")
    args = parser.parse_args()
    demo, out = Path(args.demo), Path(args.out)
    run_demo(demo)
    names = [real_folder_name(i, boxes) for i, (boxes, _) in enumerate(default_real_boxes())]
    real_sets = [read_dataset(demo / name) for name in names]
    demo_detector = demo / "detector" / "detector.pt"
    demo_payload = load_checkpoint(demo_detector, "detector")
    config = best_config(demo_payload["config"], [len(boxed_records(s)) for s in real_sets], demo_detector)
    best = out / "detector" / "detector.pt"
    if not best.is_file():
        train_detector([read_dataset(demo / "phantoms"), *real_sets], config, out / "detector")
    best_payload = load_checkpoint(best, "detector")
    for name, dataset in zip(names, real_sets):
        if held_out_ids(best_payload, dataset) != held_out_ids(demo_payload, dataset):
            raise SystemExit(f"{name}: the best run held out other films than the demo's; figures would not compare")
    table = {}
    for label, checkpoint in (("demo", demo_detector), ("best", best)):
        per_set = {name: evaluate_detector(checkpoint, dataset, out / f"eval_{label}_{name}")
                   for name, dataset in zip(names, real_sets)}
        table[label] = {"combined": combined_detection_metrics(list(per_set.values())), **per_set}
    (out / "comparison.json").write_text(json.dumps({label: {part: m.to_dict() for part, m in figures.items()}
                                                     for label, figures in table.items()}, indent=2) + "\n")
    print(f"{'detector, held-out films':30} {'films':>6} {'radius centred':>15} {'ulna centred':>13} "
          f"{'radius IoU':>11} {'ulna IoU':>9}")
    for label, figures in table.items():
        for part, m in figures.items():
            print(f"{label + ' ' + part:30} {m.n:>6} {m.radius.centre_hit_rate:>15.1%} "
                  f"{m.ulna.centre_hit_rate:>13.1%} {m.radius.mean_iou:>11.3f} {m.ulna.mean_iou:>9.3f}")
    assemble_bundle(out / "bundle", best, demo / "radius" / "classifier.pt", demo / "ulna" / "classifier.pt")
    print(f"best detector bundle: {out / 'bundle'}")


if __name__ == "__main__":
    main()
