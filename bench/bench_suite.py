"""The speed suite in one command: latency by step, batch throughput, memory, model load time and
the theoretical floor, for PyTorch and ONNX Runtime, as one table and a JSON file.

    python bench/bench_suite.py --model runs/demo/bundle [--runs 20] [--json runs/bench.json]

Each runtime is measured in its own process (so peak memory is its own). Latency: median and
p95 over ``--runs`` full-size phantoms after 3 warm-up runs, split into load (decode + SHA-256),
detect, crop, classify and render (overlay PNG); "total" is load to JSON, without render.
Throughput: ``drustage predict`` on a folder of ``--batch`` phantoms with 1 and ``--workers``
processes (JSON + overlay written; worker start-up included). Floor: the pipeline's floating-point operations (torch's
FlopCounterMode over one detector and two classifier passes) divided by this CPU's measured
float32 matmul rate; no implementation of these networks can beat it on this machine.
A bundle without an ONNX export gets one (``BUNDLE/onnx``) first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _table import print_table

STEPS = ("load", "detect", "crop", "classify", "render", "total")


def _phantoms(folder: Path, count: int) -> list[Path]:
    from drustage.synth.writer import SynthConfig, generate_dataset

    generate_dataset(folder, SynthConfig(count=count, seed=77), workers=2, progress=False)
    return sorted((folder / "images").glob("*.png"))


def measure_runtime(model: str, runtime: str, runs: int, workers: int, images: Path) -> dict:
    """Everything for one runtime, in this process, on the phantoms in ``images``."""
    from drustage.imaging import load_radiograph
    from drustage.inference.bundle import load_bundle
    from drustage.io_utils import file_sha256
    from drustage.batch import predict_files
    from drustage.pipeline import Predictor
    from drustage.viz import render_overlay

    start = time.perf_counter()
    predictor = Predictor(load_bundle(model), runtime=runtime)
    load_seconds = time.perf_counter() - start
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    paths = sorted(images.glob("*.png"))
    with tempfile.TemporaryDirectory() as folder:
        for i in range(runs + 3):
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            radiograph = load_radiograph(path)
            file_sha256(path)
            t1 = time.perf_counter()
            detections = predictor.detector(radiograph.image)
            t2 = time.perf_counter()
            boxes = {bone: list(d.box) for bone, d in detections.items() if d.box is not None}
            crops = predictor.crops(radiograph.image, boxes, None)
            t3 = time.perf_counter()
            predictor.classify(crops)
            t4 = time.perf_counter()
            # the whole path again as a user runs it: load, predict, JSON
            report = predictor.predict(load_radiograph(path), file_sha256(path))
            json.dumps(report.to_dict())
            t5 = time.perf_counter()
            render_overlay(radiograph.image, report, crops)
            t6 = time.perf_counter()
            if i >= 3:
                for step, value in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5, t5 - t4)):
                    times[step].append(value)
        throughput = {}
        for count in sorted({1, workers}):
            out = Path(folder) / f"out{count}"
            start = time.perf_counter()
            reports, _ = predict_files(predictor, paths, out, progress=False, workers=count)
            throughput[count] = len(reports) / (time.perf_counter() - start)
    return {
        "runtime": runtime, "threads": torch.get_num_threads(), "model_load_s": load_seconds,
        "latency_ms": {step: {"median": 1000 * statistics.median(v), "p95": 1000 * float(np.percentile(v, 95))}
                       for step, v in times.items()},
        "throughput_per_s": {str(k): v for k, v in throughput.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def measure_floor(model: str) -> dict:
    """Pipeline FLOPs for one typical radiograph against this CPU's float32 matmul rate."""
    from torch.utils.flop_counter import FlopCounterMode

    from drustage.inference.bundle import load_bundle
    from drustage.pipeline import Predictor

    predictor = Predictor(load_bundle(model))
    max_side = predictor.detector.max_side
    image = torch.rand(1, max_side, max_side * 5 // 6)  # a typical hand film's aspect
    crops = np.random.default_rng(0).random((1, 128, 96), dtype=np.float32)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        predictor.detector.backend.model([image])
        for classifier in predictor.classifiers.values():
            classifier.model(torch.from_numpy(crops)[:, None])
    flops = counter.get_total_flops()
    size = 1024
    a, b = torch.rand(size, size), torch.rand(size, size)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start))
    rate = max(rates)
    return {"gflop": flops / 1e9, "matmul_gflops": rate / 1e9, "floor_ms": 1000 * flops / rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/bundle", help="bundle directory (drustage demo makes one)")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="processes for the throughput row")
    parser.add_argument("--batch", type=int, default=48, help="phantoms in the throughput folder")
    parser.add_argument("--json", default="runs/bench/bench_suite.json", help="where the results go")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # internal: IMAGES RESULT for one runtime
    args = parser.parse_args()
    if args.child:
        result = measure_runtime(args.model, args.runtimes[0], args.runs, args.workers, Path(args.child[0]))
        Path(args.child[1]).write_text(json.dumps(result))
        return

    from drustage.inference.bundle import load_bundle
    from drustage.inference.onnx import ONNX_MANIFEST, default_onnx_dir, export_onnx
    from drustage.io_utils import atomic_write_text

    bundle = load_bundle(args.model)
    if "onnx" in args.runtimes and not (default_onnx_dir(bundle) / ONNX_MANIFEST).is_file():
        print(f"exporting ONNX models to {export_onnx(bundle)}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        images = _phantoms(Path(folder) / "phantoms", args.batch)[0].parent
        for runtime in args.runtimes:
            child = Path(folder) / f"{runtime}.json"
            subprocess.run([sys.executable, __file__, "--model", args.model, "--runtimes", runtime, "--runs",
                            str(args.runs), "--workers", str(args.workers), "--child", str(images), str(child)],
                           check=True)
            results[runtime] = json.loads(child.read_text())
    floor = measure_floor(args.model)
    header = ("measure", *args.runtimes)
    rows = []
    for step in STEPS:
        cells = (results[r]["latency_ms"][step] for r in args.runtimes)
        rows.append((f"{step} median / p95 (ms)", *(f"{c['median']:.0f} / {c['p95']:.0f}" for c in cells)))
    for count in sorted({1, args.workers}):
        rows.append((f"throughput, {count} worker(s), {args.batch} files (radiographs/s)",
                     *(f"{results[r]['throughput_per_s'][str(count)]:.2f}" for r in args.runtimes)))
    rows += [
        ("model load (s)", *(f"{results[r]['model_load_s']:.2f}" for r in args.runtimes)),
        ("peak memory, one process (MB)", *(f"{results[r]['peak_rss_mb']:.0f}" for r in args.runtimes)),
        (f"peak memory per worker, {args.workers} workers (MB)",
         *(f"{results[r]['peak_rss_worker_mb']:.0f}" for r in args.runtimes)),
        ("floor: detect+classify FLOPs / matmul rate (ms)", *(f"{floor['floor_ms']:.0f}" for _ in args.runtimes)),
    ]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.runs} runs after 3 warm-up; pipeline {floor['gflop']:.2f} GFLOP, matmul "
          f"{floor['matmul_gflops']:.0f} GFLOP/s")
    print_table(header, rows)
    record = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": {"cpus": os.cpu_count(),
              "platform": platform.platform(), "torch": torch.__version__}, "model": args.model,
              "bundle_fingerprint": bundle.fingerprint, "runs": args.runs, "floor": floor, "runtimes": results}
    atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
