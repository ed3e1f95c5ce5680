"""Choose the detector's inference settings by measurement: proposals kept after NMS, input size
and CPU threads, each against accuracy on the checkpoint's held-out phantoms.

    python bench/detector_settings.py runs/detector/detector.pt data/paper [--proposals 5 10 20 50]

For every setting: detection rate at IoU >= 0.5 and mean IoU per bone (held-out phantoms), and
latency per radiograph (median over the held-out images after 2 warm-ups). The model is not
retrained: a smaller input than it was trained at shows what that costs in accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _table import print_table

from drustage.data.layout import read_dataset
from drustage.inference.detector import load_detector
from drustage.stages import BONES
from drustage.data.detection import DetectionSet
from drustage.evaluation.detection import evaluate_detector_on, held_out_ids


def _latency(model, data: DetectionSet) -> float:
    times = []
    for index in range(len(data)):
        image, _ = data[index]
        start = time.perf_counter()
        with torch.inference_mode():
            model([image])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--proposals", nargs="+", type=int, default=[5, 10, 20, 50])
    parser.add_argument("--sizes", nargs="+", type=int, default=[448, 512], help="max side (min side = 3/4 of it)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--count", type=int, default=60, help="held-out images used")
    args = parser.parse_args()
    model, payload = load_detector(args.checkpoint)
    dataset = read_dataset(args.dataset)
    test_ids = held_out_ids(payload, dataset)
    records = [r for r in dataset.records if r.image_id in test_ids][: args.count]
    trained = payload["config"]["model"]
    settings = [(trained["max_size"], p, max(args.threads)) for p in args.proposals]
    settings += [(s, trained["rpn_post_nms_top_n_test"], max(args.threads)) for s in args.sizes
                 if s != trained["max_size"]]
    settings += [(trained["max_size"], trained["rpn_post_nms_top_n_test"], t) for t in args.threads
                 if t != max(args.threads)]
    rows = []
    for max_side, proposals, threads in settings:
        torch.set_num_threads(threads)
        model.rpn._post_nms_top_n["testing"] = proposals
        model.transform.min_size, model.transform.max_size = (max_side * 3 // 4,), max_side
        data = DetectionSet(dataset, records, max_side, workers=2)
        metrics = evaluate_detector_on(model, data)
        cells = [f"{metrics.bone(b).detection_rate_iou50:.3f} / {metrics.bone(b).mean_iou:.3f}" for b in BONES]
        trained_mark = "*" if (max_side, proposals) == (trained["max_size"], trained["rpn_post_nms_top_n_test"]) else ""
        rows.append((f"{max_side}{trained_mark}", str(proposals), str(threads), *cells, f"{_latency(model, data):.0f}"))
    print(f"{len(records)} held-out phantoms; * = the checkpoint's own settings")
    print_table(("max side", "proposals", "threads", "radius rate / IoU", "ulna rate / IoU", "median ms"), rows)


if __name__ == "__main__":
    main()
