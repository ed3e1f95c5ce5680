"""Detector training and evaluation, after torchvision's detection reference scripts.

Joint (end-to-end) training by default, or the paper's four-step alternating schedule
(RPN, Fast R-CNN, RPN with a frozen backbone, Fast R-CNN with a frozen backbone and RPN).
Images are read once and kept downscaled to the detector's input size; augmentation (flip,
affine, exposure) moves the boxes with the image.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from drustage.data.layout import Dataset, Record
from drustage.imaging import load_radiograph
from drustage.inference.checkpoints import load_checkpoint, save_checkpoint
from drustage.inference.detector import Detector, detections_on_cpu, downscale, load_detector
from drustage.inference.device import DEFAULT_DEVICE, grad_scaler, mixed_precision, resolve_device
from drustage.io_utils import atomic_write_text
from drustage.models.detector import LABELS, DetectorConfig, best_boxes, build_detector
from drustage.stages import BONES
from drustage.training.distributed import SINGLE, DistributedContext

log = logging.getLogger(__name__)

RPN_LOSSES = ("loss_objectness", "loss_rpn_box_reg")
HEAD_LOSSES = ("loss_classifier", "loss_box_reg")
MAX_ZOOM = 1.15  # the augmentation's largest random zoom


@dataclass
class DetectorTrainConfig:
    model: DetectorConfig = field(default_factory=DetectorConfig)
    schedule: str = "joint"  # "joint" or "alternating"
    iterations: int = 1500
    batch_size: int = 2
    lr: float = 0.01  # the paper's SGD learning rate
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100
    val_fraction: float | list[float] = 0.1  # one for all datasets, or one per dataset
    test_fraction: float | list[float] = 0.1
    validate_every: int = 250
    augment: bool = True
    # Augmentation strength, one value for all datasets or one per dataset (so boxed real films
    # can be turned or shrunk harder than phantoms): the largest turn in degrees and the smallest
    # zoom (below 1 shrinks the film inside its frame, as on a scanned board).
    rotation: float | list[float] = 10.0
    min_scale: float | list[float] = 0.85
    seed: int = 0
    threads: int | None = None
    device: str = DEFAULT_DEVICE  # auto, cpu, cuda or cuda:N; mixed precision on CUDA
    weights: str | None = None  # local state dict or detector checkpoint to start from
    # Share of training batches drawn from each dataset when several are given (e.g. phantoms
    # and a few boxed real films); None samples every training image equally often.
    dataset_weights: list[float] | None = None

    def validate(self) -> None:
        self.model.validate()
        if self.schedule not in ("joint", "alternating"):
            raise ValueError(f"schedule must be joint or alternating, got {self.schedule!r}")
        for name in ("iterations", "batch_size", "lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dataset_weights is not None and not all(w > 0 for w in self.dataset_weights):
            raise ValueError(f"dataset weights must be positive, got {self.dataset_weights}")
        if not all(0 <= r <= 90 for r in _as_list(self.rotation)):
            raise ValueError(f"rotation must be between 0 and 90 degrees, got {self.rotation}")
        if not all(0.2 <= s <= MAX_ZOOM for s in _as_list(self.min_scale)):
            raise ValueError(f"min scale must be between 0.2 and {MAX_ZOOM}, got {self.min_scale}")

    def check_dataset_count(self, count: int) -> None:
        """Per-dataset settings must name every dataset (checked before any image is read)."""
        if self.dataset_weights is not None and len(self.dataset_weights) != count:
            raise ValueError(f"{len(self.dataset_weights)} dataset weights for {count} datasets")
        for name in ("test_fraction", "val_fraction", "rotation", "min_scale"):
            values = _as_list(getattr(self, name))
            if len(values) not in (1, count):
                raise ValueError(f"{len(values)} values of {name} for {count} datasets")

    def to_dict(self) -> dict:
        return asdict(self)


def load_resized(path: Path, max_side: int) -> tuple[np.ndarray, float]:
    """A radiograph as uint8 with its longer side at most ``max_side``, and the scale used."""
    return downscale(load_radiograph(path).image, max_side)


def _load_item(task):
    path, boxes, max_side = task
    try:
        pixels, scale = load_resized(path, max_side)
    except ValueError as error:
        return str(error)
    return pixels, {bone: tuple(v * scale for v in box) for bone, box in boxes.items()}, scale


class DetectionSet(torch.utils.data.Dataset):
    """Boxed radiographs held in memory at detector resolution, as ``(image, target)`` pairs."""

    def __init__(self, dataset: Dataset, records: list[Record], max_side: int, augment: bool,
                 workers: int = 1, progress: bool = False, rotation: float = DetectorTrainConfig.rotation,
                 min_scale: float = DetectorTrainConfig.min_scale):
        from concurrent.futures import ProcessPoolExecutor

        from tqdm import tqdm

        tasks = [(dataset.path_of(r), r.boxes, max_side) for r in records]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                loaded = list(tqdm(pool.map(_load_item, tasks, chunksize=8), total=len(tasks), desc="images",
                                   disable=not progress))
        else:
            loaded = [_load_item(t) for t in tqdm(tasks, desc="images", disable=not progress)]
        self.items = []
        self.records = []
        self.scales = []  # detector pixels per original pixel
        for record, item in zip(records, loaded):
            if isinstance(item, str):
                log.warning("skipped: %s", item)
                continue
            self.items.append(item[:2])
            self.records.append(record)
            self.scales.append(item[2])
        self.transform = _augmentation(rotation, min_scale) if augment else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from torchvision import tv_tensors

        pixels, boxes = self.items[index]
        image = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]
        bones = [b for b in BONES if b in boxes]
        corners = torch.tensor([boxes[b] for b in bones], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(corners, format="XYXY", canvas_size=tuple(image.shape[-2:])),
            "labels": torch.tensor([LABELS[b] for b in bones], dtype=torch.int64),
        }
        image = tv_tensors.Image(image)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), {"boxes": target["boxes"].as_subclass(torch.Tensor),
                                                 "labels": target["labels"]}


def _augmentation(rotation: float, min_scale: float):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(0.5),  # a right hand is a mirrored left hand
        v2.RandomAffine(degrees=rotation, translate=(0.08, 0.08), scale=(min_scale, MAX_ZOOM)),
        v2.ColorJitter(brightness=0.25, contrast=0.3),
        v2.SanitizeBoundingBoxes(min_size=4),
    ])


def _collate(batch):
    return tuple(zip(*batch))


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


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    from torchvision.ops import box_iou as tv_box_iou

    return float(tv_box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


def _per_class_map(summary) -> dict[int, float]:
    classes = summary["classes"].reshape(-1).tolist()
    values = summary["map_per_class"].reshape(-1).tolist()
    return dict(zip(classes, values))


@dataclass(frozen=True)
class DetectorRun:
    """A detector's raw outputs on a ``DetectionSet`` (for AP) and, per image, the box kept for
    each bone (after post-processing) beside the true one."""
    predictions: list[dict]
    truths: list[dict]
    found: list[dict]  # per image: bone -> Detection
    true_boxes: list[dict]  # per image: bone -> [x1, y1, x2, y2]

    def iou(self, index: int, bone: str) -> float:
        """IoU of the kept box with the true one; a miss counts as 0."""
        box = self.found[index][bone].box
        return box_iou(box, self.true_boxes[index][bone]) if box is not None else 0.0

    def centre_inside(self, index: int, bone: str) -> bool:
        """Whether the kept box's centre lies inside the true box: on the right bone, however
        tightly framed (how a person counts a box as found); a miss counts as outside."""
        box = self.found[index][bone].box
        if box is None:
            return False
        x1, y1, x2, y2 = self.true_boxes[index][bone]
        return x1 <= (box[0] + box[2]) / 2 <= x2 and y1 <= (box[1] + box[3]) / 2 <= y2


def run_detector_on(model, data: DetectionSet, batch: int = 4, threshold: float = 0.5) -> DetectorRun:
    run = DetectorRun([], [], [], [])
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(data), batch):
        items = [data[i] for i in range(start, min(start + batch, len(data)))]
        with torch.inference_mode(), mixed_precision(device):
            outputs = model([image.to(device) for image, _ in items])
        outputs = [detections_on_cpu(output) for output in outputs]
        for (image, target), output in zip(items, outputs):
            run.predictions.append({k: output[k] for k in ("boxes", "scores", "labels")})
            run.truths.append({"boxes": target["boxes"], "labels": target["labels"]})
            run.found.append(best_boxes(output, tuple(image.shape[-2:]), threshold))
            run.true_boxes.append({bone: tuple(target["boxes"][int(match[0])].tolist())
                                   for bone, label in LABELS.items()
                                   if len(match := (target["labels"] == label).nonzero())})
    return run


def detector_metrics(run: DetectorRun) -> dict:
    """AP@0.5 and AP@[.5:.95] per class (torchmetrics, COCO protocol), mean IoU of the best
    box per bone, the detection rate at IoU >= 0.5 (a miss counts as IoU 0), and the share of
    kept boxes centred inside the true box (on the right bone even where the framing differs)."""
    from torchmetrics.detection import MeanAveragePrecision

    coco = MeanAveragePrecision(iou_type="bbox", class_metrics=True)
    at_50 = MeanAveragePrecision(iou_type="bbox", class_metrics=True, iou_thresholds=[0.5])
    coco.update(run.predictions, run.truths)
    at_50.update(run.predictions, run.truths)
    coco_summary, summary_50 = coco.compute(), at_50.compute()
    ap, ap50 = _per_class_map(coco_summary), _per_class_map(summary_50)
    result: dict = {"n": len(run.found), "map_50": float(coco_summary["map_50"]), "map": float(coco_summary["map"])}
    for bone, label in LABELS.items():
        boxed = [i for i, truth in enumerate(run.true_boxes) if bone in truth]
        values = np.array([run.iou(i, bone) for i in boxed])
        centred = np.array([run.centre_inside(i, bone) for i in boxed])
        result[bone] = {
            "ap_50": ap50.get(label, float("nan")),
            "ap_50_95": ap.get(label, float("nan")),
            "mean_iou": float(values.mean()) if len(values) else float("nan"),
            "detection_rate_iou50": float((values >= 0.5).mean()) if len(values) else float("nan"),
            "centre_hit_rate": float(centred.mean()) if len(centred) else float("nan"),
        }
    return result


def evaluate_detector_on(model, data: DetectionSet, batch: int = 4, threshold: float = 0.5) -> dict:
    """``detector_metrics`` of the model on ``data``."""
    return detector_metrics(run_detector_on(model, data, batch, threshold))


def _as_list(value: float | list[float]) -> list[float]:
    return [value] if isinstance(value, (int, float)) else list(value)


def _per_dataset(value: float | list[float], index: int) -> float:
    """Dataset ``index``'s setting from one value for all or a list with one per dataset."""
    values = _as_list(value)
    return float(values[0] if len(values) == 1 else values[index])


def boxed_records(dataset: Dataset) -> list[Record]:
    """The radiographs of ``dataset`` that carry both a radius and an ulna box."""
    return [r for r in dataset.records if all(b in r.boxes for b in BONES)]


def split_records(dataset: Dataset, config: DetectorTrainConfig,
                  index: int = 0) -> tuple[list[Record], list[Record], list[Record]]:
    """Seeded train/validation/test split of the boxed radiographs of dataset ``index``."""
    records = boxed_records(dataset)
    if len(records) < 3:
        raise ValueError(f"{dataset.root}: need at least 3 radiographs with radius and ulna boxes, "
                         f"found {len(records)}")
    order = np.random.default_rng(config.seed).permutation(len(records))
    n_test = max(1, round(_per_dataset(config.test_fraction, index) * len(records)))
    n_val = max(1, round(_per_dataset(config.val_fraction, index) * len(records)))
    test = [records[i] for i in order[:n_test]]
    val = [records[i] for i in order[n_test:n_test + n_val]]
    train = [records[i] for i in order[n_test + n_val:]]
    return train, val, test


def _training_loader(train_sets: list[DetectionSet], config: DetectorTrainConfig, pin_memory: bool = False):
    generator = torch.Generator().manual_seed(config.seed)
    joined = torch.utils.data.ConcatDataset(train_sets)
    if config.dataset_weights is None:
        return torch.utils.data.DataLoader(joined, batch_size=config.batch_size, shuffle=True, collate_fn=_collate,
                                           generator=generator, drop_last=True, pin_memory=pin_memory)
    total = sum(config.dataset_weights)
    per_image = torch.cat([torch.full((len(s),), w / total / len(s), dtype=torch.float64)
                           for s, w in zip(train_sets, config.dataset_weights)])
    sampler = torch.utils.data.WeightedRandomSampler(per_image, num_samples=len(joined), replacement=True,
                                                     generator=generator)
    return torch.utils.data.DataLoader(joined, batch_size=config.batch_size, sampler=sampler, collate_fn=_collate,
                                       drop_last=True, pin_memory=pin_memory)


def _validation_summary(model, val_sets: list[DetectionSet]) -> dict[str, float]:
    """Per-bone IoU and detection rate averaged over the datasets, so a small real set counts
    as much as a large phantom one when the best checkpoint is chosen."""
    results = [evaluate_detector_on(model, s) for s in val_sets]
    return {f"val_{bone}_{name}": float(np.mean([r[bone][key] for r in results]))
            for bone in BONES for name, key in (("iou", "mean_iou"), ("rate", "detection_rate_iou50"))}


def train_detector(datasets: Dataset | list[Dataset], config: DetectorTrainConfig, out: str | Path, workers: int = 1,
                   progress: bool = True, distributed: DistributedContext = SINGLE) -> dict:
    """Train on one dataset, or on several at once (each split into train/validation/test on
    its own). Returns the held-out metrics of the first dataset, with every dataset's under
    ``by_dataset`` when there are several.

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
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    splits = [split_records(dataset, config, i) for i, dataset in enumerate(datasets)]
    max_side = config.model.max_size
    train_sets = [DetectionSet(d, train, max_side, config.augment, workers, progress,
                               rotation=_per_dataset(config.rotation, i), min_scale=_per_dataset(config.min_scale, i))
                  for i, (d, (train, _, _)) in enumerate(zip(datasets, splits))]
    val_sets = [DetectionSet(d, val, max_side, False, workers, progress) for d, (_, val, _) in zip(datasets, splits)]
    device = distributed.device(resolve_device(config.device))
    loader = _training_loader(train_sets, config, pin_memory=device.type == "cuda")
    model = build_detector(config.model, weights=config.weights).to(device)
    scaler = grad_scaler(device)
    history, best = [], {"score": -1.0, "state": None, "iteration": 0}
    iteration = 0
    for phase, steps in schedule_phases(config):
        wanted = _set_phase(model, phase)
        network = distributed.wrap(model, device)  # wrapped per phase: DDP keeps the parameters that train
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        warmup = min(config.warmup, steps // 4)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i, warmup=warmup, steps=steps: min(1.0, (i + 1) / max(1, warmup))
            * 0.5 * (1 + math.cos(math.pi * i / steps)))
        bar = tqdm(total=steps, desc=f"detector {phase}", unit="it", disable=not progress)
        done = 0
        while done < steps:
            for images, targets in loader:
                model.train()
                mine = distributed.shard(len(images))  # every process drew the same global batch
                images = [image.to(device, non_blocking=True) for image in images[mine]]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets[mine]]
                with mixed_precision(device):
                    losses = network(images, targets)
                    loss = sum(losses[k] for k in wanted)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"non-finite detector loss {loss.item()} at iteration {iteration}; "
                                       "lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(parameters, 10.0)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                done += 1
                iteration += 1
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if iteration % config.validate_every == 0 or done == steps:
                    summary = _validation_summary(model, val_sets)
                    score = sum(summary[f"val_{b}_iou"] for b in BONES)
                    history.append({"iteration": iteration, "phase": phase, "loss": float(loss.item()), **summary})
                    if score > best["score"]:
                        best = {"score": score, "iteration": iteration,
                                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
                if done == steps:
                    break
        bar.close()
    model.load_state_dict(best["state"])
    _set_phase(model, "joint")
    names = [d.root.name for d in datasets]
    if len(set(names)) < len(names):
        names = [str(d.root) for d in datasets]
    by_dataset = {name: evaluate_detector_on(model, DetectionSet(d, test, max_side, False, workers, progress))
                  for name, d, (_, _, test) in zip(names, datasets, splits)}
    test_metrics = dict(by_dataset[names[0]])
    if len(datasets) > 1:
        test_metrics["by_dataset"] = by_dataset
    test_metrics["best_iteration"] = best["iteration"]
    # every process ran the evaluation alike (the model's parameters stay tied to the process group
    # until it ends); rank 0 writes
    if not distributed.is_main:
        distributed.barrier()
        return test_metrics
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
    return test_metrics


def _plain(value):
    """Tuples to lists, so a config survives ``weights_only`` loading as plain data."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def held_out_ids(payload: dict, dataset: Dataset) -> set[str]:
    """The image ids a detector checkpoint held out of ``dataset``. Runs on several datasets
    record a list per dataset (found by folder name or path); none for a dataset they did not
    train on. Older checkpoints hold one list for all."""
    data = payload.get("data", {})
    by_dataset = data.get("test_ids_by_dataset")
    if by_dataset is None:
        return set(data.get("test_ids", []))
    for name in (dataset.root.name, str(dataset.root)):
        if name in by_dataset:
            return set(by_dataset[name])
    return set()


def evaluate_detector(checkpoint: str | Path, dataset: Dataset, out: str | Path, held_out_only: bool = True,
                      workers: int = 1, threshold: float = 0.5, held_out_of: str | Path | None = None) -> dict:
    """Metrics of a detector checkpoint on a dataset (its recorded test images when present, or
    those of the ``held_out_of`` checkpoint, e.g. the run it was fine-tuned from), ``cases.csv``
    with every image's kept boxes, scores and IoUs, and a contact sheet of the worst images first:
    predicted (colour) against true (green) boxes."""
    from drustage.viz import detection_sheet

    model, payload = load_detector(checkpoint)
    records = boxed_records(dataset)
    split_from = payload if held_out_of is None else load_checkpoint(held_out_of, "detector")
    test_ids = held_out_ids(split_from, dataset)
    if held_out_only and test_ids and any(r.image_id in test_ids for r in records):
        records = [r for r in records if r.image_id in test_ids]
    if not records:
        raise ValueError(f"{dataset.root}: no radiographs with radius and ulna boxes to evaluate on")
    data = DetectionSet(dataset, records, payload["config"]["model"]["max_size"], False, workers)
    run = run_detector_on(model, data, threshold=threshold)
    metrics = detector_metrics(run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["image_id,bone,found,score,iou,centred,x1,y1,x2,y2,true_x1,true_y1,true_x2,true_y2"]  # original pixels
    for index, record in enumerate(data.records):
        for bone in BONES:
            box = run.found[index][bone].box
            kept = [f"{v / data.scales[index]:.1f}" for v in box] if box is not None else [""] * 4
            rows.append(",".join([record.image_id, bone, str(box is not None).lower(),
                                  f"{run.found[index][bone].score:.4f}", f"{run.iou(index, bone):.4f}",
                                  str(run.centre_inside(index, bone)).lower(), *kept,
                                  *(f"{v:.1f}" for v in record.boxes[bone])]))
    atomic_write_text(out / "cases.csv", "\n".join(rows) + "\n")
    worst_iou = [min(run.iou(i, bone) for bone in BONES) for i in range(len(data))]
    worst = sorted(range(len(data)), key=worst_iou.__getitem__)[:24]
    panels = [(data[i][0][0].numpy(), run.found[i], run.true_boxes[i],
               f"{data.records[i].image_id} IoU {worst_iou[i]:.2f}") for i in worst]
    detection_sheet(panels, out / "detections.png")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def write_crops(dataset: Dataset, out: str | Path, detector: str | Path | None = None, threshold: float = 0.5,
                progress: bool = True) -> str:
    """A new dataset in ``out`` over the same images whose boxes come from ``detector`` (or the
    dataset's own boxes), plus the 128x96 crops as PNG and ``crops.csv``. Classifiers trained on
    it see what the detector really produces."""
    import csv
    import io
    import os

    from tqdm import tqdm

    from drustage.data.crops import crop_region, needs_mirror
    from drustage.data.layout import write_labels, write_manifest
    from drustage.imaging import RadiographError, to_uint8
    from drustage.io_utils import save_png

    out = Path(out)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    find = Detector.from_checkpoint(detector, threshold) if detector else None
    records, rows, problems = [], [], []
    for record in tqdm(dataset.records, desc="crops", unit="img", disable=not progress):
        try:
            image = load_radiograph(dataset.path_of(record)).image
        except RadiographError as error:
            problems.append(str(error))
            continue
        if find is None:
            boxes = dict(record.boxes)
            scores = {bone: 1.0 for bone in boxes}
        else:
            found = find(image)
            boxes = {bone: d.box for bone, d in found.items() if d.box is not None}
            scores = {bone: d.score for bone, d in found.items()}
            problems += [f"{record.file}: {bone} not found (best score {found[bone].score:.2f})"
                         for bone in BONES if bone not in boxes]
        for bone, box in boxes.items():
            name = f"crops/{bone}/{record.image_id}.png"
            save_png(out / name, to_uint8(crop_region(image, box, needs_mirror(record.laterality))))
            truth = record.boxes.get(bone)
            rows.append({"image_id": record.image_id, "bone": bone, "file": name,
                         "stage": record.stages[bone].code if bone in record.stages else "",
                         "score": f"{scores[bone]:.4f}",
                         "iou_to_label": f"{box_iou(box, truth):.4f}" if truth else ""})
        relative = os.path.relpath(dataset.path_of(record), out)
        records.append(replace(record, file=relative, boxes=boxes))
    write_labels(out, records)
    write_manifest(out, source="drustage crop", boxes="detector" if detector else "labels",
                   dataset=dataset.root.name)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image_id", "bone", "file", "stage", "score", "iou_to_label"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "crops.csv", buffer.getvalue())
    lines = [f"wrote {len(rows)} crops of {len(records)} radiographs to {out}"] + problems
    return "\n".join(lines)


def real_detection_sheet(checkpoint: str | Path, paths: list[Path], out: str | Path, threshold: float = 0.5) -> dict:
    """Detections on unlabelled (real) radiographs as a contact sheet for counting by eye;
    returns how many had both bones found above the threshold."""
    from drustage.imaging import RadiographError
    from drustage.viz import detection_sheet

    find = Detector.from_checkpoint(checkpoint, threshold)
    panels, both, failures = [], 0, []
    for path in paths:
        try:
            image = load_radiograph(path).image
        except RadiographError as error:
            failures.append(str(error))
            continue
        found = find(image)
        both += all(d.box is not None for d in found.values())
        panels.append((image, found, None, path.stem))
    detection_sheet(panels, out)
    return {"images": len(panels), "both_found": both, "failures": failures}
