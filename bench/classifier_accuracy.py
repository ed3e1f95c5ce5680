"""Accuracy of the stage classifiers on a phantom `paper` dataset with the paper's protocol.

Trains radius phase4 (net7, Adam 1e-4, R5-R11, 25 test per class) and ulna phase3 (net8, Adam 1e-4,
50 test per class), both balanced with x5 augmentation and dropout, then the fine `stage` scheme for
both bones, and prints one table.

    drustage synth --preset paper --out data/paper
    python bench/classifier_accuracy.py data/paper --out runs/accuracy [--epochs 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from drustage.data.layout import read_dataset
from drustage.training.config import ClassifierConfig
from drustage.training.classifier import train_classifier

from _table import print_table  # noqa: E402  (bench/ is the script's directory)

# The paper's best ulna learning rate (Adam 1e-3) leaves net8 at chance on phantoms (measured: loss
# flat at ln 3 for 20 epochs), so both bones use 1e-4.
PAPER_RUNS = {
    "radius-phase4": dict(bone="radius", scheme="phase4", net="net7", lr=1e-4, min_stage="R5", test_per_class=25,
                          per_class_cap={"pre-peak": 75, "peak": 75, "deceleration": 175, "mature": 75}),
    "ulna-phase3": dict(bone="ulna", scheme="phase3", net="net8", lr=1e-4, test_per_class=50,
                        per_class_cap={"peak": 200, "deceleration": 250, "mature": 150}),
    "radius-stage": dict(bone="radius", scheme="stage", net="net7", lr=1e-4, test_fraction=0.2),
    "ulna-stage": dict(bone="ulna", scheme="stage", net="net7", lr=1e-4, test_fraction=0.2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--out", default="runs/accuracy")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=sorted(PAPER_RUNS), help="run a subset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = read_dataset(args.dataset)
    rows = []
    for name, settings in PAPER_RUNS.items():
        if args.only and name not in args.only:
            continue
        config = ClassifierConfig(epochs=args.epochs, seed=args.seed, augment=5, balance=True, dropout=0.5,
                                  **settings)
        result = train_classifier(dataset, config, Path(args.out) / name, workers=args.workers, progress=False)
        m = result.test
        low, high = m.accuracy_ci95
        rows.append((name, config.net, str(m.n), f"{m.accuracy:.3f}", f"{low:.3f}-{high:.3f}",
                     f"{m.within_one_accuracy:.3f}", f"{m.kappa:.3f}", f"{m.kappa_quadratic:.3f}",
                     str(result.best_epoch)))
        print(f"done {name}: accuracy {m.accuracy:.3f}", flush=True)
    header = ("run", "net", "n test", "accuracy", "95% CI", "within one", "kappa", "quadratic kappa", "best epoch")
    print_table(header, rows)


if __name__ == "__main__":
    main()
