"""Scale-out throughput on this machine: batch prediction with local worker processes against Ray
Data actors, and classifier training in one process against torchrun processes.

    python bench/bench_scale.py --model runs/demo/bundle [--images 200] [--counts 1 2]

Prediction: ``drustage predict`` on ``--images`` phantoms (JSON + overlay written, start-up of the
workers or of Ray included), each engine and count in a fresh output folder; every run's JSON
answers are compared with the first run's (the last line says whether all are identical). Training:
``drustage train-classifier`` for 2 epochs on 40 phantoms, one process against ``torchrun
--nproc-per-node N`` (gloo on CPU; the same global batch, so the same losses).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_table


def _seconds(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    drustage = [sys.executable, "-m", "drustage"]
    rows = []
    differing = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([*drustage, "synth", "--count", str(args.images), "--seed", "91", "--out", str(tmp / "films"),
                        "--quiet", "--no-sheet"], check=True, stdout=subprocess.DEVNULL)
        for engine in ("local", "ray"):
            for count in args.counts:
                out = tmp / f"{engine}-{count}"
                seconds = _seconds([*drustage, "predict", str(tmp / "films/images"), "--model", args.model,
                                    "--out", str(out), "--engine", engine, "--workers", str(count), "--quiet"])
                rows.append(["predict", f"{engine} x{count}", f"{seconds:.1f}", f"{args.images / seconds:.2f} img/s"])
                first = tmp / f"local-{args.counts[0]}"
                differing += [f"{engine} x{count}: {path.name}" for path in sorted(first.glob("*.json"))
                              if path.read_bytes() != (out / path.name).read_bytes()]
        train = ["train-classifier", str(tmp / "films"), "--net", "custom", "--conv", "16c3-32c3-32c3-64c3",
                 "--fc", "128", "--epochs", "2", "--augment", "4", "--bone", "radius", "--scheme", "phase4", "--quiet"]
        for count in args.counts:
            launcher = (drustage if count == 1 else
                        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                         str(count), "-m", "drustage"])
            threads = str(max(1, (os.cpu_count() or 1) // count))
            seconds = _seconds([*launcher, *train, "--out", str(tmp / f"train-{count}"), "--threads", threads],
                               env={"OMP_NUM_THREADS": threads})
            rows.append(["train-classifier", f"{'one process' if count == 1 else f'torchrun x{count}'}",
                         f"{seconds:.1f}", "2 epochs"])
    print_table(["job", "engine", "seconds", "rate"], rows)
    print("answers identical across engines and counts" if not differing
          else f"{len(differing)} answers differ, e.g. {differing[:3]}")


if __name__ == "__main__":
    main()
