"""train-classifier under torchrun: two gloo processes on the CPU train on shards of the same global
batches and match one process's losses; only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from drustage.training.distributed import DistributedContext

# dropout 0: its masks are drawn per process, so only without it are the runs equal step for step
ARGS = ["--net", "custom", "--conv", "4c3-8c3", "--fc", "16", "--dropout", "0", "--epochs", "5", "--augment", "4",
        "--batch-size", "16", "--val-fraction", "0.2", "--test-fraction", "0.2", "--bone", "radius", "--scheme",
        "phase4", "--threads", "1", "--quiet",
        # float32: bfloat16 rounds a shard's sums otherwise than the whole batch's, and the
        # comparison below is of the process group's arithmetic, not of the precision
        "--no-mixed-precision"]


def _history(run) -> list[dict]:
    from drustage.inference.checkpoints import load_checkpoint

    return load_checkpoint(run / "classifier.pt", "classifier")["history"]


@pytest.mark.slow
def test_two_processes_match_one(quick_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, double = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "drustage", "train-classifier", str(quick_dataset), "--out", str(single),
                    *ARGS], check=True, env=env, timeout=600)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "drustage", "train-classifier", str(quick_dataset), "--out", str(double), *ARGS],
                          env=env, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1  # rank 0 speaks for both
    one, two = _history(single), _history(double)
    assert len(one) == len(two) == 5  # 5 batches of 16 an epoch on these phantoms: 25 steps
    for a, b in zip(one, two):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), (key, a, b)
    assert one[-1]["train_loss"] < one[0]["train_loss"]  # it trained
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())


def test_shards_cover_a_batch_once_and_scale_to_its_mean():
    ranks = [DistributedContext(rank, 3) for rank in range(3)]
    rows = list(range(10))
    shards = [rows[context.shard(len(rows))] for context in ranks]
    assert sorted(sum(shards, [])) == rows
    # mean over processes of (shard sum x scale) is the batch mean
    scaled = [sum(shard) * context.loss_scale(len(shard), len(rows)) for shard, context in zip(shards, ranks)]
    assert sum(scaled) / 3 == pytest.approx(sum(rows) / len(rows))
    assert DistributedContext().sum([1.5, 2.0]) == [1.5, 2.0] and not DistributedContext().enabled


@pytest.mark.slow
def test_detector_trains_under_torchrun(quick_dataset, tmp_path):
    from drustage.inference.checkpoints import load_checkpoint

    out = tmp_path / "det"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "drustage", "train-detector", str(quick_dataset), "--out", str(out),
                           "--iterations", "4", "--validate-every", "2", "--batch-size", "2", "--min-size", "160",
                           "--max-size", "200", "--representation-size", "256", "--threads", "1", "--quiet"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1  # rank 0 speaks and writes for both
    payload = load_checkpoint(out / "detector.pt", "detector")
    assert [row["iteration"] for row in payload["history"]] == [2, 4]
    assert all(np.isfinite(row["loss"]) for row in payload["history"])
    assert sorted(p.name for p in out.iterdir()) == ["detector.pt", "metrics.json"]
