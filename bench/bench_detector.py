"""Detector speed on CPU for each backbone, memory layout of the convolutions and (ZFNet) box
pooling: latency per radiograph (median of 20 after warm-up) and training time per 100 iterations
(batch 2), on full-size phantoms. The library runs channels-last (the layout its oneDNN
convolutions prefer). A ZFNet pooling is ``roipool`` or ``roialign:N`` (N sample points per bin
side).

    python bench/bench_detector.py [--backbones zfnet mobilenet_v3 resnet18_fpn]
        [--layouts contiguous channels_last] [--pools roipool roialign:2 roialign:1] [--iterations 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from _table import print_table  # noqa: E402  (bench/ is the script's directory)

from drustage.data.layout import read_dataset
from drustage.imaging import downscale
from drustage.models.config import BACKBONES, DetectorConfig
from drustage.models.detector import build_detector
from drustage.synth.writer import SynthConfig, generate_dataset
from drustage.data.detection import BoxAugmentation, DetectionSet, collate_detections

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--iterations", type=int, default=20, help="training iterations timed (scaled to 100)")
    parser.add_argument("--pools", nargs="+", default=["roipool"], help="ZFNet box pooling(s): roipool, roialign:N")
    parser.add_argument("--representation-size", type=int, default=DetectorConfig.representation_size,
                        help="units of the box head's FC layers (the demo's: 1024)")
    parser.add_argument("--min-size", type=int, default=384)
    parser.add_argument("--max-size", type=int, default=512)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, SynthConfig(count=24, seed=5), workers=2, progress=False)
        dataset = read_dataset(folder)
        from drustage.imaging import load_radiograph

        full = [load_radiograph(dataset.path_of(r)).image for r in dataset.records[:4]]
        data = DetectionSet(dataset, list(dataset.records), args.max_size, BoxAugmentation())
        variants = [(b, layout, pool) for b in args.backbones for layout in args.layouts
                    for pool in (args.pools if b == "zfnet" else ["-"])]
        for backbone, layout, pool in variants:
            torch.manual_seed(0)
            name, _, samples = pool.partition(":")
            pooling = {} if pool == "-" else {"roi_pool": name}
            if samples:
                pooling["roi_align_samples"] = int(samples)
            model = build_detector(DetectorConfig(backbone=backbone, min_size=args.min_size, max_size=args.max_size,
                                                  representation_size=args.representation_size, **pooling))
            model.to(memory_format=LAYOUTS[layout]).eval()
            times = []
            with torch.inference_mode():
                for i in range(25):  # 5 warm-up, 20 timed; includes the downscale from full size
                    start = time.perf_counter()
                    pixels, _ = downscale(full[i % len(full)], args.max_size)
                    model([torch.from_numpy(pixels.astype(np.float32) / 255)[None]])
                    if i >= 5:
                        times.append(time.perf_counter() - start)
            loader = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True, collate_fn=collate_detections)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
            model.train()
            done, start = 0, time.perf_counter()
            while done < args.iterations:
                for images, targets in loader:
                    loss = sum(model(list(images), list(targets)).values())
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    done += 1
                    if done == args.iterations:
                        break
            per_100 = (time.perf_counter() - start) / args.iterations * 100
            parameters = sum(p.numel() for p in model.parameters()) / 1e6
            rows.append((backbone, layout, pool, f"{parameters:.1f}", f"{statistics.median(times) * 1000:.0f}",
                         f"{np.percentile(times, 95) * 1000:.0f}", f"{per_100:.0f}"))
    print(f"detector input {args.min_size}-{args.max_size} px, CPU threads {torch.get_num_threads()}")
    header = ("backbone", "layout", "box pooling", "params (M)", "latency median (ms)", "latency p95 (ms)",
              "train s / 100 it")
    print_table(header, rows)


if __name__ == "__main__":
    main()
