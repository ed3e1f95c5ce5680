"""Classifier recipes measured on real films with a known bone age: prints a table.

Reuses a finished demo folder (its phantoms, and its real films with a bone age boxed by its
detector, ``DEMO/aged``) and trains each recipe's radius and ulna classifiers on them. Each is
scored on the real validation and test films of ``annotations/real/maturity_split.csv`` (recipes
are chosen on validation; test is shown for the record) and on the held-out phantoms:

    python bench/real_maturity.py runs/demo --recipes phantoms weak --out runs/recipes

Figures per bone: Spearman of the expected stage with bone age (girls / boys), the share of
readings implausible for the age (before any review flag), phantom phase accuracy and ECE.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

RECIPES = {
    # name: ClassifierConfig overrides of the demo's, and whether the aged films join training
    "phantoms": ({}, False),
    "weak": ({"aged_weight": 1.0, "aged_batch": 16, "aged_rank_weight": 0.0}, True),
    "weak-heavy": ({"aged_weight": 3.0, "aged_batch": 16, "aged_rank_weight": 0.0}, True),
    "weak-heavy-wide-batch": ({"aged_weight": 3.0, "aged_batch": 32, "aged_rank_weight": 0.0}, True),
    "weak-narrow": ({"aged_weight": 3.0, "aged_spread": 0.5, "aged_rank_weight": 0.0}, True),
    "weak-wide": ({"aged_weight": 3.0, "aged_spread": 1.2, "aged_rank_weight": 0.0}, True),
    # weak-heavy-wide-batch plus a within-sex ranking loss on the expected stage (the demo's: heavy)
    "weak-rank": ({"aged_weight": 3.0, "aged_batch": 32, "aged_rank_weight": 1.0}, True),
    "weak-rank-heavy": ({"aged_weight": 3.0, "aged_batch": 32, "aged_rank_weight": 5.0}, True),
    # the demo's, twice the epochs; and the real films' losses weighted over three times as much
    "weak-rank-heavy-long": ({"aged_weight": 3.0, "aged_batch": 32, "aged_rank_weight": 5.0, "epochs": 32}, True),
    "weak-real-dominant": ({"aged_weight": 10.0, "aged_batch": 32, "aged_rank_weight": 15.0}, True),
}


def score(checkpoint: Path, aged, index: np.ndarray) -> dict:
    from drustage.growth import PatientInfo
    from drustage.inference.classifier import expected_class, load_classifier, predict_logits
    from drustage.pipeline import BoneResult, implausible_reading, read_probabilities
    from drustage.training.objectives import within_sex_spearman

    model, payload = load_classifier(checkpoint)
    scheme = payload["scheme_object"]
    probabilities = predict_logits(model, aged.crops[index]).softmax(1).numpy()
    spearman = within_sex_spearman(expected_class(probabilities), aged.ages[index], [aged.sexes[i] for i in index])
    implausible = []
    for p, i in zip(probabilities, index):  # read as the predictor reads: phase first, then its best stage
        result = BoneResult(scheme.bone, True, None, None, "given", scheme.name)
        read_probabilities(result, scheme, p)
        implausible.append(implausible_reading(scheme, result.prediction, PatientInfo(aged.sexes[i], aged.ages[i])))
    return {"spearman": spearman, "implausible": float(np.mean([r is not None for r in implausible]))}


def main() -> None:
    from drustage.data.aged_films import default_split_file, read_split
    from drustage.data.layout import read_dataset
    from drustage.demo import demo_classifier_config
    from drustage.training.aged import image_id_splits
    from drustage.training.classifier import ClassifierTrainResult, train_classifier
    from drustage.training.crop_sets import build_aged_crops

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", help="a finished drustage demo folder (with phantoms/ and aged/)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", default="runs/recipes")
    parser.add_argument("--epochs", type=int, help="override the demo's classifier epochs")
    parser.add_argument("--epoch-samples", type=int, help="override the demo's labelled crops per epoch")
    parser.add_argument("--conv", help="override the demo's networks: a custom conv spec")
    parser.add_argument("--fc", default="512", help="fc spec with --conv")
    args = parser.parse_args()

    demo = Path(args.demo)
    phantoms, aged_dataset = read_dataset(demo / "phantoms"), read_dataset(demo / "aged")
    splits = image_id_splits(aged_dataset, read_split(default_split_file()))
    rows = []
    for name in args.recipes:
        overrides, weak = RECIPES[name]
        for bone in ("radius", "ulna"):
            config = replace(demo_classifier_config(bone), **overrides,
                             **({"epochs": args.epochs} if args.epochs else {}),
                             **({"epoch_samples": args.epoch_samples} if args.epoch_samples else {}),
                             **({"net": "custom", "conv_spec": args.conv, "fc_spec": args.fc} if args.conv else {}))
            aged = build_aged_crops(aged_dataset, config, splits, workers=2, progress=False)
            run = Path(args.out) / name / bone
            if not (run / "metrics.json").is_file():
                train_classifier(phantoms, config, run, workers=2, progress=False, aged=aged if weak else None)
            phantom = ClassifierTrainResult.read(run).test
            figures = {part: score(run / "classifier.pt", aged, aged.part(part)) for part in ("validation", "test")}
            rows.append((name, bone, figures, phantom))
            print(f"done: {name} {bone}", flush=True)
    print("\n| recipe | bone | Spearman val F / M | Spearman test F / M | implausible val / test "
          "| phantom stage acc | phantom phase acc | phantom phase ECE |")
    print("|---|---|---|---|---|---|---|---|")
    for name, bone, figures, phantom in rows:
        spear = {part: " / ".join(f"{figures[part]['spearman'].get(s, float('nan')):.3f}" for s in "FM")
                 for part in figures}
        print(f"| {name} | {bone} | {spear['validation']} | {spear['test']} | "
              f"{figures['validation']['implausible']:.1%} / {figures['test']['implausible']:.1%} | "
              f"{phantom.accuracy:.1%} | {phantom.phase.accuracy:.1%} | {phantom.phase.ece:.3f} |")


if __name__ == "__main__":
    main()
