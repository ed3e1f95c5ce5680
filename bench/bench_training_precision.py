"""Training speed of the demo's networks in float32 and under mixed precision (bfloat16 autocast on a
CPU that computes it natively, else float32 again): seconds per training step of the demo's
detector (batch 2, augmented phantoms at its input size) and of its classifiers (16 labelled and
32 real crops a step), median of the timed steps after warm-up.

    python bench/bench_training_precision.py [--steps 12] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.nn import functional as F

from _table import print_table  # noqa: E402  (bench/ is the script's directory)
from drustage.data.crops import CROP_SIZE
from drustage.data.detection import DetectionSet, collate_detections
from drustage.data.layout import read_dataset
from drustage.demo import DEMO, demo_classifier_config
from drustage.inference.device import autocast_dtype, grad_scaler
from drustage.models.classifier import StageClassifier
from drustage.models.detector import build_detector
from drustage.stages import get_scheme
from drustage.synth.writer import SynthConfig, generate_dataset
from drustage.training.engine import optimisation_step, training_precision

WARM_UP = 3
CPU = torch.device("cpu")


def step_seconds(step, steps: int) -> float:
    times = []
    for i in range(WARM_UP + steps):
        start = time.perf_counter()
        step(i)
        if i >= WARM_UP:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def detector_step(data: DetectionSet, mixed: bool):
    torch.manual_seed(0)
    model = build_detector(DEMO.detector.model).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = grad_scaler(CPU)

    def step(i: int) -> None:
        images, targets = collate_detections([data[(2 * i) % len(data)], data[(2 * i + 1) % len(data)]])
        with training_precision(CPU, mixed):
            loss = sum(model(list(images), list(targets)).values())
        optimisation_step(loss, optimizer, scaler, f"detector step {i}")

    return step


def classifier_step(mixed: bool):
    torch.manual_seed(0)
    config = demo_classifier_config("radius")
    classes = get_scheme(config.scheme, config.bone).num_classes
    model = StageClassifier(config.resolved_spec(), classes, dropout=config.dropout, standardize=config.standardize,
                            batch_norm=config.batch_norm).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = grad_scaler(CPU)
    crops = torch.rand(config.batch_size + config.aged_batch, 1, *CROP_SIZE).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (len(crops),))

    def step(i: int) -> None:
        with training_precision(CPU, mixed):
            loss = F.cross_entropy(model(crops).float(), labels)
        optimisation_step(loss, optimizer, scaler, f"classifier step {i}")

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per network and precision")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mixed_dtype = autocast_dtype(CPU, on_cpu=True)
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, SynthConfig(count=16, seed=5, image_scale=DEMO.image_scale), workers=1,
                         progress=False)
        dataset = read_dataset(folder)
        data = DetectionSet(dataset, list(dataset.records), DEMO.detector.model.max_size,
                            DEMO.detector.augmentation(0))
        rows = []
        for name, make in (("detector", lambda mixed: detector_step(data, mixed)), ("classifier", classifier_step)):
            full = step_seconds(make(False), args.steps)
            mixed = step_seconds(make(True), args.steps)
            rows.append((name, f"{full:.3f}", f"{mixed:.3f}", f"{full / mixed:.2f}"))
    print(f"CPU threads {torch.get_num_threads()}; mixed precision here: "
          f"{'bfloat16' if mixed_dtype is not None else 'none (float32: no native bfloat16)'}")
    print_table(("network (the demo's)", "float32 s / step", "mixed s / step", "speed-up"), rows)


if __name__ == "__main__":
    main()
