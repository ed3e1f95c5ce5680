"""Stage-classifier training with the paper's protocol.

Stratified hold-out (fixed count or fraction per class), validation carved from training for
model selection, optional oversampling of minority classes, on-the-fly translation/scaling
augmentation with an epoch-size factor, Adam or SGD, and one final test evaluation.

Real films without stage labels but with a known age and sex can join the training as weak
supervision (``training.crop_sets.AgedCrops``): their target is the stage distribution the growth table gives for
that age (``growth.stage_distribution``), learnt with a soft cross-entropy beside the labelled
crops' hard one, so the labels keep the stages' meaning while the real films teach what real
bone looks like at each maturity. After model selection a temperature is fitted on the
validation crops, so the probabilities a bundle reports are calibrated; with off-bone crops, a
class-spread threshold is fitted on the validation films too, above which a reading is withheld
as showing no readable bone (``_fit_readability``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from drustage.data.crops import CROP_SIZE
from drustage.data.layout import Dataset
from drustage.data.splits import stratified_split
from drustage.evaluation.classification import (
    ClassificationMetrics,
    expected_calibration_error,
    plot_confusion,
    probability_metrics,
    write_learning_curves,
)
from drustage.inference.checkpoints import save_checkpoint
from drustage.inference.classifier import (class_spread, expected_class, load_classifier, predict_logits,
                                           window_batch)
from drustage.inference.device import grad_scaler, resolve_device
from drustage.io_utils import atomic_write_text
from drustage.models.classifier import StageClassifier
from drustage.training.config import ClassifierConfig
from drustage.training.crop_sets import AgedCrops, balanced_indices, build_crop_set
from drustage.training.engine import BestWeights, optimisation_step, training_precision
from drustage.training.objectives import fit_temperature, ranking_loss, within_sex_spearman
from drustage.training.seeding import seeded_run
from drustage.training.distributed import SINGLE, DistributedContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierTrainResult:
    """A training run's held-out test figures, the epoch kept and, with aged films, the aged
    validation films' Spearman correlation per sex."""

    test: ClassificationMetrics
    best_epoch: int
    aged_validation_spearman: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """The test figures with ``best_epoch`` (and the aged correlations) beside them, as
        ``metrics.json`` and the checkpoint store them."""
        result = {**self.test.to_dict(), "best_epoch": self.best_epoch}
        if self.aged_validation_spearman is not None:
            result["aged_validation_spearman"] = self.aged_validation_spearman
        return result

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierTrainResult:
        return cls(ClassificationMetrics.from_dict(data), int(data["best_epoch"]), data.get("aged_validation_spearman"))

    @classmethod
    def read(cls, run: str | Path) -> ClassifierTrainResult:
        """The result a finished run wrote to ``<run>/metrics.json``."""
        return cls.from_dict(json.loads((Path(run) / "metrics.json").read_text())["test"])


def _loss_and_accuracy(model, context, labels) -> tuple[float, float]:
    logits = predict_logits(model, context)
    loss = F.cross_entropy(logits, torch.from_numpy(labels)).item()
    return loss, float((logits.argmax(1).numpy() == labels).mean())


@seeded_run
def train_classifier(dataset: Dataset, config: ClassifierConfig, out: str | Path, workers: int = 1,
                     progress: bool = True, checkpoint: bool = True, aged: AgedCrops | None = None,
                     distributed: DistributedContext = SINGLE) -> ClassifierTrainResult:
    """Train, select on validation, calibrate, test once; write checkpoint (unless ``checkpoint``
    is False), metrics and plots to ``out``. ``metrics.json`` is written last: its presence marks
    a finished run.

    With ``aged``, each labelled batch is joined by ``config.aged_batch`` aged training crops with
    their soft targets, and model selection adds the aged validation films' Spearman correlation
    of the expected class with age (mean over sexes) to the labelled validation accuracy. The
    aged test films are never looked at here.

    Under ``torchrun`` (``distributed`` from ``training.distributed.from_environment``) each process
    trains on its shard of every global batch; all evaluate alike and only rank 0 writes."""
    from tqdm import tqdm

    config.validate()
    if distributed.enabled and aged is not None and config.aged_rank_weight:
        raise ValueError("the ranking loss pairs films across the whole batch: train it in one process")
    progress = progress and distributed.is_main
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = build_crop_set(dataset, config, workers=workers, progress=progress)
    scheme = data.scheme
    test_amount = config.test_per_class if config.test_per_class is not None else config.test_fraction
    split = stratified_split(data.labels, test=test_amount, validation=config.val_fraction, seed=config.seed)
    if not len(split.test):
        raise ValueError(f"{dataset.root}: {len(data.labels)} {config.bone} crops under the {config.scheme} scheme "
                         f"leave none for the test split at {test_amount}; use more images or a larger test share")

    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    # channels_last measured faster on CPU for training and inference (bench/bench_classifier.py)
    model = StageClassifier(config.resolved_spec(), scheme.num_classes, dropout=config.dropout,
                            standardize=config.standardize, batch_norm=config.batch_norm)
    device = distributed.device(resolve_device(config.device))
    model = model.to(device, memory_format=torch.channels_last)
    network = distributed.wrap(model, device)  # what trains; ``model`` is the same weights, unwrapped
    scaler = grad_scaler(device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer](
            model.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)

    train_labels = data.labels[split.train]
    base = balanced_indices(train_labels, rng) if config.balance else np.arange(len(train_labels))
    augmenting = config.augment > 1
    epoch_size = len(base) * config.augment if config.epoch_samples is None else config.epoch_samples
    steps = config.epochs * -(-epoch_size // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if config.lr_schedule == "cosine" else None
    history, best = [], BestWeights()
    validation_context = data.crops[split.validation] if len(split.validation) else data.crops[split.train]
    validation_labels = data.labels[split.validation] if len(split.validation) else train_labels
    aged_train = aged_validation = None
    if aged is not None:
        aged_train, aged_validation = aged.part("train"), aged.part("validation")
        if not len(aged_train) or not len(aged_validation):
            raise ValueError("aged films need both training and validation films")
        off_count = off_bone_count(config, aged)
    for epoch in range(1, config.epochs + 1):
        model.train()
        pool = np.tile(base, config.augment)
        picks = (rng.permutation(len(pool)) if config.epoch_samples is None
                 else rng.integers(0, len(pool), config.epoch_samples))
        order = split.train[pool[picks]]
        total_loss, total_correct = 0.0, 0
        batches = range(0, len(order), config.batch_size)
        for start in tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
                          disable=not progress):
            index = order[start:start + config.batch_size]
            windows = augmented_windows(data.crops[index].to(device), config, generator if augmenting else None)
            targets = torch.from_numpy(data.labels[index]).to(device)
            # every process drew (and augmented) the same global batch; each trains on its shard
            mine = distributed.shard(len(index))
            windows, targets = windows[mine], targets[mine]
            aged_windows = None
            if aged_train is not None:
                picked = aged_train[rng.integers(0, len(aged_train), config.aged_batch - off_count)]
                crops, soft_targets = aged.crops[picked], aged.targets[picked]
                ages, sexes = torch.from_numpy(aged.ages[picked]).float(), [aged.sexes[i] for i in picked]
                if config.aged_mixup:
                    crops, soft_targets, ages = mixed_films(crops, soft_targets, ages, sexes, config.aged_mixup, rng)
                if off_count:  # off-bone crops read as no stage in particular: a uniform target
                    off = rng.integers(0, len(aged.off_bone), off_count)
                    crops = torch.cat([crops, aged.off_bone[off]])
                    soft_targets = torch.cat([soft_targets, torch.full((off_count, scheme.num_classes),
                                                                       1.0 / scheme.num_classes)])
                aged_mine = distributed.shard(len(crops))
                aged_windows = augmented_windows(crops.to(device), config,
                                                 generator if augmenting else None)[aged_mine]
            with training_precision(device, config.mixed_precision):
                # one pass over labelled and aged crops together: batch statistics (with batch_norm)
                # are those of the mixture the model reads at prediction time
                inputs = windows if aged_windows is None else torch.cat([windows, aged_windows])
                all_logits = network(inputs.contiguous(memory_format=torch.channels_last)).float()
                logits, aged_logits = all_logits[:len(windows)], all_logits[len(windows):]
                loss = F.cross_entropy(logits, targets, reduction="sum") * distributed.loss_scale(len(targets),
                                                                                                   len(index))
                if aged_windows is not None:
                    soft = -(soft_targets[aged_mine].to(device) * F.log_softmax(aged_logits, 1)).sum()
                    soft = soft * distributed.loss_scale(len(aged_logits), len(crops))
                    loss = loss + config.aged_weight * soft
                    if config.aged_rank_weight:  # one process (checked above): the first rows are the films
                        loss = loss + config.aged_rank_weight * ranking_loss(
                            aged_logits[:len(picked)], ages, sexes, config.aged_rank_margin)
            optimisation_step(loss, optimizer, scaler, f"classifier epoch {epoch}")
            if scheduler is not None:
                scheduler.step()
            total_loss += loss.item() * len(index) / distributed.world_size
            total_correct += int((logits.argmax(1) == targets).sum())
        total_loss, total_correct = distributed.sum([total_loss, total_correct])
        val_loss, val_accuracy = _loss_and_accuracy(model, validation_context, validation_labels)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": total_loss / len(order),
               "train_accuracy": total_correct / len(order), "val_loss": val_loss, "val_accuracy": val_accuracy}
        score = val_accuracy
        if aged is not None:
            correlation = _aged_spearman(model, aged, aged_validation)
            row["val_aged_spearman"] = float(np.mean(list(correlation.values()) or [0.0]))
            score += row["val_aged_spearman"]
        history.append(row)
        if progress:
            aged_text = f" spearman(aged) {row['val_aged_spearman']:.3f}" if aged is not None else ""
            log.info("epoch %d: train loss %.3f acc %.3f | val loss %.3f acc %.3f%s", epoch, row["train_loss"],
                     row["train_accuracy"], val_loss, val_accuracy, aged_text)
        best.offer((score, -val_loss), epoch, model)

    best.restore(model)
    calibration = _calibrate(model, validation_context, validation_labels, config.calibrate)
    readability = None if aged is None else _fit_readability(model, aged, config, validation_context)
    if readability is not None and progress:
        log.info("readable up to a class spread of %.2f: %.1f%% of the validation films' crops read, %.1f%% of "
                 "their off-bone crops", readability["max_spread"], 100 * readability["on_bone_read"],
                 100 * readability["off_bone_read"])
    test_probabilities = predict_logits(model, data.crops[split.test]).softmax(1).numpy()
    result = ClassifierTrainResult(probability_metrics(data.labels[split.test], test_probabilities, scheme),
                                   best.step, None if aged is None else _aged_spearman(model, aged, aged_validation))
    if not distributed.is_main:  # rank 0 writes; the others have the same results
        distributed.barrier()
        return result
    test_metrics = result.to_dict()
    title = f"{config.bone} {config.scheme} {config.net}"
    plot_confusion(result.test, out / "confusion.png", f"{title}: held-out test")
    write_learning_curves(history, out / "curves.png", out / "curves.csv", title)
    counts = {name: int((data.labels == i).sum()) for i, name in enumerate(scheme.classes)}
    if checkpoint:
        save_checkpoint(
            out / "classifier.pt", "classifier", model.state_dict(),
            config=config.to_dict(), scheme=scheme.to_dict(), input_size=list(CROP_SIZE),
            metrics=test_metrics, history=history, calibration=calibration, readability=readability,
            data={"dataset": str(dataset.root.name), "class_counts": counts,
                  "split": {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)},
                  "test_ids": [data.image_ids[i] for i in split.test],
                  **({} if aged is None else {"aged": {name: int((aged.splits == name).sum())
                                                        for name in ("train", "validation", "test")},
                                               "off_bone_crops": {part: 0 if crops is None else len(crops)
                                                                  for part, crops in (("train", aged.off_bone),
                                                                                      ("validation",
                                                                                       aged.off_bone_validation))},
                                               "aged_test_ids": [aged.image_ids[i] for i in aged.part("test")]})},
        )
    atomic_write_text(out / "metrics.json", json.dumps({"config": config.to_dict(), "test": test_metrics,
                                                        "calibration": calibration, "readability": readability,
                                                        "class_counts": counts},
                                                       indent=2) + "\n")
    distributed.barrier()
    return result


def augmented_windows(context: torch.Tensor, config: ClassifierConfig,
                      generator: torch.Generator | None) -> torch.Tensor:
    """Training windows of context crops: shifted, scaled and turned, their exposure curve bent
    (``config.max_gamma``); centre windows without a generator."""
    windows = window_batch(context, generator, config.max_shift, config.scale_range, config.max_rotation)
    if generator is None or config.max_gamma == 1:
        return windows
    log_gamma = (torch.rand(len(windows), generator=generator) * 2 - 1) * np.log(config.max_gamma)
    return windows.clamp(min=0) ** log_gamma.exp().to(windows.device)[:, None, None, None]


def mixed_films(crops: torch.Tensor, targets: torch.Tensor, ages: torch.Tensor, sexes: list[str | None],
                alpha: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup within sex: each film's crop, target distribution and age blended with those of
    another film of the batch of the same sex (itself where it has none), in a share drawn from
    Beta(alpha, alpha). A few hundred films are otherwise learnt by heart."""
    partners = np.arange(len(crops))
    for sex in sorted(set(sexes), key=str):  # a fixed order: the draws repeat run to run
        members = np.array([i for i, s in enumerate(sexes) if s == sex])
        partners[members] = rng.permutation(members)
    share = torch.from_numpy(rng.beta(alpha, alpha, len(crops))).float()
    return (share[:, None, None, None] * crops + (1 - share[:, None, None, None]) * crops[partners],
            share[:, None] * targets + (1 - share[:, None]) * targets[partners],
            share * ages + (1 - share) * ages[partners])


def off_bone_count(config: ClassifierConfig, aged: AgedCrops) -> int:
    """How many off-bone crops join each aged batch (the rest are films with an age)."""
    if aged.off_bone is None or not config.off_bone_share:
        return 0
    return min(round(config.aged_batch * config.off_bone_share), config.aged_batch - 1)


def _aged_spearman(model: nn.Module, aged: AgedCrops, index: np.ndarray) -> dict[str, float]:
    probabilities = predict_logits(model, aged.crops[index]).softmax(1).numpy()
    return within_sex_spearman(expected_class(probabilities), aged.ages[index], [aged.sexes[i] for i in index])


def _calibrate(model: StageClassifier, context: torch.Tensor, labels: np.ndarray, enabled: bool) -> dict:
    """Fit and set the model's temperature on validation crops; the ECE before and after."""
    logits = predict_logits(model, context) * float(model.temperature)  # undo any temperature already set
    before = logits.softmax(1).numpy()
    temperature = fit_temperature(logits, labels) if enabled else 1.0
    model.temperature.fill_(temperature)
    after = (logits / temperature).softmax(1).numpy()

    def ece(p):
        return expected_calibration_error(p.max(1), p.argmax(1) == labels)

    return {"temperature": temperature, "fitted_on": "validation", "n": int(len(labels)),
            "ece_before": ece(before), "ece_after": ece(after)}


def _fit_readability(model: StageClassifier, aged: AgedCrops, config: ClassifierConfig,
                     labelled: torch.Tensor) -> dict | None:
    """The class spread above which a reading shows no readable bone, fitted on the validation
    films: it leaves ``config.readable_off_bone_read`` of their off-bone crops read, raised if need
    be to read ``config.readable_min_kept`` of their crops on the bones; with the shares read at it
    (and of the labelled validation crops). None without validation off-bone crops."""
    if aged.off_bone_validation is None:
        return None

    def spreads(context: torch.Tensor) -> np.ndarray:
        return class_spread(predict_logits(model, context).softmax(1).numpy())

    on_bone = spreads(aged.crops[aged.part("validation")])
    off_bone = spreads(aged.off_bone_validation)
    threshold = float(max(np.quantile(off_bone, config.readable_off_bone_read),
                          # "higher": the share asked is read whatever the number of films
                          np.quantile(on_bone, config.readable_min_kept, method="higher")))
    return {"max_spread": round(threshold, 4), "fitted_on": "validation",
            "films": int(len(on_bone)), "off_bone_crops": int(len(off_bone)),
            "on_bone_read": float((on_bone <= threshold).mean()),
            "off_bone_read": float((off_bone <= threshold).mean()),
            "labelled_read": float((spreads(labelled) <= threshold).mean())}


def evaluate_classifier(checkpoint: str | Path, dataset: Dataset, out: str | Path, held_out_only: bool = True,
                        workers: int = 1, progress: bool = True) -> ClassificationMetrics:
    """Metrics of a checkpoint on a dataset: its recorded test images when present, else all."""
    model, payload = load_classifier(checkpoint)
    config = ClassifierConfig(**{k: (tuple(v) if k == "scale_range" else v) for k, v in payload["config"].items()})
    data = build_crop_set(dataset, config, workers=workers, progress=progress)
    index = np.arange(len(data.labels))
    test_ids = set(payload.get("data", {}).get("test_ids", []))
    if held_out_only and test_ids and test_ids & set(data.image_ids):
        index = np.array([i for i, image_id in enumerate(data.image_ids) if image_id in test_ids])
    probabilities = predict_logits(model, data.crops[index]).softmax(1).numpy()
    scheme = payload["scheme_object"]
    metrics = probability_metrics(data.labels[index], probabilities, scheme)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(metrics, out / "confusion.png", f"{config.bone} {config.scheme}: {dataset.root.name}")
    atomic_write_text(out / "metrics.json", json.dumps(metrics.to_dict(), indent=2) + "\n")
    return metrics
