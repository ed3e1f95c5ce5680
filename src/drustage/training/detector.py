"""Detector training, after torchvision's detection reference scripts.

Joint (end-to-end) training by default, or the paper's four-step alternating schedule
(RPN, Fast R-CNN, RPN with a frozen backbone, Fast R-CNN with a frozen backbone and RPN).
The data (``drustage.data.detection``) and the metrics (``drustage.evaluation.detection``)
live with their layers.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from drustage.data.detection import DetectionSet, collate_detections
from drustage.data.layout import Dataset
from drustage.evaluation.detection import DetectionMetrics, evaluate_detector_on
from drustage.inference.checkpoints import save_checkpoint
from drustage.inference.device import grad_scaler, resolve_device
from drustage.io_utils import atomic_write_text
from drustage.models.detector import build_detector
from drustage.stages import BONES
from drustage.training.config import DetectorTrainConfig
from drustage.training.engine import BestWeights, DetectorPhase, evaluate, train_one_epoch
from drustage.training.seeding import seeded_run
from drustage.training.distributed import SINGLE, DistributedContext

log = logging.getLogger(__name__)

RPN_LOSSES = ("loss_objectness", "loss_rpn_box_reg")
HEAD_LOSSES = ("loss_classifier", "loss_box_reg")


def _set_phase(model, phase: str) -> tuple[str, ...]:
    """Freeze what a schedule phase does not train; return the losses that phase optimises."""
    parts = {"backbone": model.backbone, "rpn": model.rpn, "heads": model.roi_heads}
    trains = {"joint": ("backbone", "rpn", "heads"), "rpn": ("backbone", "rpn"), "fast-rcnn": ("backbone", "heads"),
              "rpn-shared": ("rpn",), "fast-rcnn-shared": ("heads",)}[phase]
    for name, module in parts.items():
        for parameter in module.parameters():
            parameter.requires_grad_(name in trains)
    if phase == "joint":
        return RPN_LOSSES + HEAD_LOSSES
    return RPN_LOSSES if phase.startswith("rpn") else HEAD_LOSSES


def schedule_phases(config: DetectorTrainConfig) -> list[tuple[str, int]]:
    """(phase, iterations) in order; the alternating one keeps the paper's 8000:4000:8000:4000."""
    if config.schedule == "joint":
        return [("joint", config.iterations)]
    unit = config.iterations / 24
    steps = [("rpn", 8), ("fast-rcnn", 4), ("rpn-shared", 8), ("fast-rcnn-shared", 4)]
    return [(name, max(1, round(unit * weight))) for name, weight in steps]


def _training_loader(train_sets: list[DetectionSet], config: DetectorTrainConfig, pin_memory: bool = False):
    generator = torch.Generator().manual_seed(config.seed)
    joined = torch.utils.data.ConcatDataset(train_sets)
    if config.dataset_weights is None:
        return torch.utils.data.DataLoader(joined, batch_size=config.batch_size, shuffle=True,
                                           collate_fn=collate_detections, generator=generator, drop_last=True,
                                           pin_memory=pin_memory)
    total = sum(config.dataset_weights)
    per_image = torch.cat([torch.full((len(s),), w / total / len(s), dtype=torch.float64)
                           for s, w in zip(train_sets, config.dataset_weights)])
    sampler = torch.utils.data.WeightedRandomSampler(per_image, num_samples=len(joined), replacement=True,
                                                     generator=generator)
    return torch.utils.data.DataLoader(joined, batch_size=config.batch_size, sampler=sampler,
                                       collate_fn=collate_detections, drop_last=True, pin_memory=pin_memory)


def _start_phase(model, config: DetectorTrainConfig, name: str, steps: int) -> DetectorPhase:
    """Freeze what the phase does not train; its SGD with warm-up then cosine decay."""
    losses = _set_phase(model, name)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    warmup = min(config.warmup, steps // 4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * i / steps)))
    return DetectorPhase(name, losses, parameters, optimizer, scheduler)


@dataclass(frozen=True)
class DetectorTrainResult:
    """The held-out figures of a training run: of each dataset (in the order given) and the
    iteration whose checkpoint was kept."""

    by_dataset: dict[str, DetectionMetrics]
    best_iteration: int

    @property
    def test(self) -> DetectionMetrics:
        """The first dataset's."""
        return next(iter(self.by_dataset.values()))

    def to_dict(self) -> dict:
        """The first dataset's figures, every dataset's under ``by_dataset`` when there are several."""
        result = {**self.test.to_dict(), "best_iteration": self.best_iteration}
        if len(self.by_dataset) > 1:
            result["by_dataset"] = {name: m.to_dict() for name, m in self.by_dataset.items()}
        return result


@seeded_run
def train_detector(datasets: Dataset | list[Dataset], config: DetectorTrainConfig, out: str | Path, workers: int = 1,
                   progress: bool = True, distributed: DistributedContext = SINGLE) -> DetectorTrainResult:
    """Train on one dataset, or on several at once (each split into train/validation/test on
    its own). Returns every dataset's held-out figures.

    Under ``torchrun`` every process draws the same global batch and trains on its share of the
    images (DDP averages the gradients; BatchNorm statistics and the heads' per-batch loss
    normalisation are per process, so the losses are close to, not equal to, one process's). Only
    rank 0 writes."""
    from tqdm import tqdm

    config.validate()
    if distributed.enabled and config.batch_size % distributed.world_size:
        raise ValueError(f"batch size {config.batch_size} does not split over {distributed.world_size} processes")
    progress = progress and distributed.is_main
    datasets = [datasets] if isinstance(datasets, Dataset) else list(datasets)
    config.check_dataset_count(len(datasets))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = [config.split(dataset, i) for i, dataset in enumerate(datasets)]
    max_side = config.model.max_size
    train_sets = [DetectionSet(d, train, max_side, config.augmentation(i), workers, progress)
                  for i, (d, (train, _, _)) in enumerate(zip(datasets, splits))]
    val_sets = [DetectionSet(d, val, max_side, None, workers, progress) for d, (_, val, _) in zip(datasets, splits)]
    device = distributed.device(resolve_device(config.device))
    loader = _training_loader(train_sets, config, pin_memory=device.type == "cuda")
    # channels-last convolutions: 8-12% faster per training step on 2 CPU cores (bench/bench_detector.py)
    model = build_detector(config.model, weights=config.weights).to(device, memory_format=torch.channels_last)
    scaler = grad_scaler(device)
    history, best = [], BestWeights()
    iteration = 0
    for name, steps in schedule_phases(config):
        phase = _start_phase(model, config, name, steps)
        network = distributed.wrap(model, device)  # wrapped per phase: DDP keeps the parameters that train
        bar = tqdm(total=steps, desc=f"detector {name}", unit="it", disable=not progress)
        done = 0
        while done < steps:
            for loss in train_one_epoch(network, phase, loader, device, scaler, steps - done, iteration,
                                        distributed.shard, config.mixed_precision):
                done += 1
                iteration += 1
                bar.update()
                bar.set_postfix(loss=f"{loss:.3f}")
                if iteration % config.validate_every == 0 or done == steps:
                    summary = evaluate(model, val_sets)
                    history.append({"iteration": iteration, "phase": name, "loss": loss, **summary})
                    best.offer(sum(summary[f"val_{b}_iou"] for b in BONES), iteration, model)
        bar.close()
    best.restore(model)
    _set_phase(model, "joint")
    names = [d.root.name for d in datasets]
    if len(set(names)) < len(names):
        names = [str(d.root) for d in datasets]
    by_dataset = {name: evaluate_detector_on(model, DetectionSet(d, test, max_side, None, workers, progress))
                  for name, d, (_, _, test) in zip(names, datasets, splits)}
    result = DetectorTrainResult(by_dataset, best.step)
    test_metrics = result.to_dict()
    # every process ran the evaluation alike (the model's parameters stay tied to the process group
    # until it ends); rank 0 writes
    if not distributed.is_main:
        distributed.barrier()
        return result
    save_checkpoint(out / "detector.pt", "detector", model.state_dict(), config=_plain(config.to_dict()),
                    metrics=test_metrics, history=history,
                    data={"dataset": names[0], "datasets": names,
                          "train": sum(len(s) for s in train_sets), "validation": sum(len(s) for s in val_sets),
                          "test_ids": [r.image_id for _, _, test in splits for r in test],
                          # phantom sets share image ids, so each dataset keeps its own list
                          "test_ids_by_dataset": {name: [r.image_id for r in test]
                                                  for name, (_, _, test) in zip(names, splits)}})
    atomic_write_text(out / "metrics.json", json.dumps({"config": config.to_dict(), "test": test_metrics,
                                                        "history": history}, indent=2) + "\n")
    distributed.barrier()
    return result


def _plain(value):
    """Tuples to lists, so a config survives ``weights_only`` loading as plain data."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
