"""End-to-end latency per radiograph on CPU (load to JSON), split by stage, and peak memory.

    python bench/bench_pipeline.py --model runs/demo/bundle [--images DIR] [--runs 20]

Median and p95 over ``--runs`` radiographs after 3 warm-up runs; peak memory is the process's
maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from drustage.bundle import load_bundle
    from drustage.data.labels import list_images
    from drustage.imaging import load_radiograph
    from drustage.pipeline import Predictor, file_sha256
    from drustage.synth.writer import SynthConfig, generate_dataset
    from drustage.viz import render_overlay

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="bundle directory or .zip")
    parser.add_argument("--images", help="folder of radiographs (default: 12 fresh full-size phantoms)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    start = time.perf_counter()
    predictor = Predictor(load_bundle(args.model))
    load_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        if args.images:
            paths = list_images(args.images)
        else:
            generate_dataset(folder, SynthConfig(count=12, seed=77), workers=2, progress=False)
            paths = sorted(Path(folder, "images").glob("*.png"))
        stages = {k: [] for k in ("load", "predict (detect+crop+classify)", "json", "render", "total")}
        for i in range(args.runs + 3):
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            radiograph = load_radiograph(path)
            digest = file_sha256(path)
            t1 = time.perf_counter()
            report = predictor.predict(radiograph, digest).to_dict()
            t2 = time.perf_counter()
            json.dumps(report)
            t3 = time.perf_counter()
            boxes = {b: report[b]["box"] for b in ("radius", "ulna") if report[b]["box"]}
            render_overlay(radiograph.image, report, predictor.crops(radiograph.image, boxes, report["laterality"]))
            t4 = time.perf_counter()
            if i >= 3:
                for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t3 - t0)):
                    stages[key].append(value)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.runs} radiographs after 3 warm-up, {torch.get_num_threads()} threads; model load {load_seconds:.2f} s; "
          f"peak RSS {peak_mb:.0f} MB; total = load to JSON (render not included)")
    print(f"{'stage':<32} | median (ms) | p95 (ms)")
    print(f"{'-' * 32}-+-------------+---------")
    for key, values in stages.items():
        print(f"{key:<32} | {statistics.median(values) * 1000:11.0f} | {np.percentile(values, 95) * 1000:8.0f}")


if __name__ == "__main__":
    main()
