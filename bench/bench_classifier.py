"""Classifier speed on this machine's CPU: seconds per training epoch (3000 crops, net7, batch 16)
and crops per second at inference, for the variants that might help.

    python bench/bench_classifier.py [--crops 3000] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from drustage.models.classifier import StageClassifier
from drustage.models.spec import preset_spec

from _table import print_table  # noqa: E402  (bench/ is the script's directory)


def epoch_seconds(model, crops, labels, batch, channels_last: bool) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for i in range(0, len(crops), batch):
        x = crops[i:i + batch]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), labels[i:i + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def inference_rate(model, crops, batch, channels_last: bool) -> float:
    model.eval()
    with torch.inference_mode():
        model(crops[:batch])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(crops), batch):
            x = crops[i:i + batch]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
    return len(crops) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    crops = torch.rand(args.crops, 1, 128, 96)
    labels = torch.randint(0, 4, (args.crops,))
    rows = []
    for name, channels_last, compiled in (("eager", False, False), ("channels_last", True, False),
                                          ("torch.compile", False, True)):
        model = StageClassifier(preset_spec("net7"), 4)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compiled:
            try:
                model = torch.compile(model)
                epoch_seconds(model, crops[:64], labels[:64], 16, False)  # compile outside the timing
            except Exception as error:  # no compiler toolchain: report, do not fail the table
                rows.append((name, f"unavailable ({type(error).__name__})", "", ""))
                continue
        seconds = epoch_seconds(model, crops, labels, 16, channels_last)
        rate16 = inference_rate(model, crops[:1024], 16, channels_last)
        rate256 = inference_rate(model, crops[:1024], 256, channels_last)
        rows.append((name, f"{seconds:.1f}", f"{rate16:.0f}", f"{rate256:.0f}"))
    print(f"net7 classifier, {args.crops} crops of 1x128x96, batch 16, {args.threads} threads, "
          f"torch {torch.__version__}")
    header = ("variant", "s/epoch (train)", "crops/s (infer, batch 16)", "crops/s (infer, batch 256)")
    print_table(header, rows)


if __name__ == "__main__":
    main()
