"""Phantom generation speed: seconds for N full-size radiographs with W worker processes.

    python bench/bench_synth.py [--count 100] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from drustage.synth.writer import SynthConfig, generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rows = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            generate_dataset(out, SynthConfig(count=args.count, seed=1), workers=workers, progress=False)
            seconds = time.perf_counter() - start
        rows.append((str(workers), f"{seconds:.1f}", f"{args.count / seconds:.2f}"))
    print(f"{args.count} full-size phantoms (16-bit PNG, 900-1500 x 1000-1800 px)")
    print("workers | seconds | phantoms/s")
    print("--------+---------+-----------")
    for row in rows:
        print(f"{row[0]:<7} | {row[1]:<7} | {row[2]}")


if __name__ == "__main__":
    main()
