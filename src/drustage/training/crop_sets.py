"""The crops a classifier trains on: labelled crops of one bone under a class scheme, and real
films' crops with an age and a sex (weak supervision), with their targets and sampling."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from drustage.data.crops import extract_context_crops
from drustage.data.layout import Dataset
from drustage.growth import stage_distribution
from drustage.stages import BONES, ClassScheme, get_scheme, parse_stage
from drustage.training.config import ClassifierConfig

__all__ = ["AgedCrops", "CropSet", "balanced_indices", "build_aged_crops", "build_crop_set", "class_distribution",
           "stray_crops"]

log = logging.getLogger(__name__)


@dataclass
class CropSet:
    """Context crops of one bone with their class labels under a scheme."""

    crops: torch.Tensor  # (N, 1, 160, 120) float32
    labels: np.ndarray  # (N,) class indices
    image_ids: list[str]
    stages: list[str]
    scheme: ClassScheme = field(repr=False)


def build_crop_set(dataset: Dataset, config: ClassifierConfig, workers: int = 1, progress: bool = True) -> CropSet:
    scheme = get_scheme(config.scheme, config.bone)
    crops = extract_context_crops(dataset, workers=workers, progress=progress)
    minimum = parse_stage(config.min_stage, config.bone).index if config.min_stage else 1
    arrays, labels, ids, stages = [], [], [], []
    for record in dataset.records:
        stage = record.stages.get(config.bone)
        if stage is None or record.image_id not in crops or config.bone not in crops[record.image_id]:
            continue
        cls = scheme.class_of(stage)
        if cls is None or stage.index < minimum:
            continue
        arrays.append(crops[record.image_id][config.bone])
        labels.append(cls)
        ids.append(record.image_id)
        stages.append(stage.code)
    if not arrays:
        raise ValueError(f"{dataset.root}: no {config.bone} crops with stages under the {config.scheme} scheme")
    labels_arr = np.array(labels)
    keep = np.arange(len(labels_arr))
    if config.per_class_cap:
        rng = np.random.default_rng(config.seed + 7919)
        chosen = []
        for cls, name in enumerate(scheme.classes):
            members = keep[labels_arr == cls]
            cap = config.per_class_cap.get(name, len(members))
            chosen.append(np.sort(rng.permutation(members)[:cap]))
        keep = np.sort(np.concatenate(chosen))
    tensor = torch.from_numpy(np.stack([arrays[i] for i in keep]))[:, None]
    return CropSet(tensor, labels_arr[keep], [ids[i] for i in keep], [stages[i] for i in keep], scheme)


@dataclass
class AgedCrops:
    """Context crops of real films with an age and a sex but no stage, and their weak targets."""

    crops: torch.Tensor  # (N, 1, 160, 120) float32
    targets: torch.Tensor  # (N, C) class distributions implied by age and sex
    ages: np.ndarray  # (N,) years
    sexes: list[str | None]
    image_ids: list[str]
    splits: np.ndarray  # (N,) "train", "validation" or "test"
    # (M, 1, 160, 120) crops of the training films' boxes moved off the bones (see
    # ``ClassifierConfig.off_bone_share``), and the validation films' (which fit the readability
    # threshold); None when the config asks for none
    off_bone: torch.Tensor | None = None
    off_bone_validation: torch.Tensor | None = None

    def part(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def class_distribution(scheme: ClassScheme, age: float, sex: str | None, spread: float) -> np.ndarray:
    """The growth table's stage distribution for an age, summed into the scheme's classes (stages
    the scheme leaves out drop out, the rest renormalised)."""
    stages = stage_distribution(scheme.bone, age, sex, spread)
    target = np.zeros(scheme.num_classes, dtype=np.float32)
    for index, p in enumerate(stages):
        cls = scheme.stage_to_class[index]
        if cls is not None:
            target[cls] += p
    if target.sum() <= 0:  # all the mass on left-out stages: the nearest kept class
        kept = [i for i, c in enumerate(scheme.stage_to_class) if c is not None]
        nearest = min(kept, key=lambda i: abs(i - int(np.argmax(stages))))
        target[scheme.stage_to_class[nearest]] = 1.0
    return target / target.sum()


def build_aged_crops(dataset: Dataset, config: ClassifierConfig, splits: dict[str, str], workers: int = 1,
                     progress: bool = True) -> AgedCrops:
    """Aged crops of ``config.bone`` from a dataset whose records carry ``age_years``, a sex and
    boxes; ``splits`` maps image ids to train/validation/test (others are left out)."""
    scheme = get_scheme(config.scheme, config.bone)
    crops = extract_context_crops(dataset, workers=workers, progress=progress)
    arrays, targets, ages, sexes, ids, parts = [], [], [], [], [], []
    for record in dataset.records:
        if record.age_years is None or record.image_id not in splits:
            continue
        if config.bone not in crops.get(record.image_id, {}):
            continue
        arrays.append(crops[record.image_id][config.bone])
        targets.append(class_distribution(scheme, record.age_years, record.sex, config.aged_spread))
        ages.append(record.age_years)
        sexes.append(record.sex)
        ids.append(record.image_id)
        parts.append(splits[record.image_id])
    if not arrays:
        raise ValueError(f"{dataset.root}: no {config.bone} crops of films with an age")
    off_bone = {"train": None, "validation": None}
    if config.off_bone_share > 0:
        for part in off_bone:
            films = {i for i, film_part in zip(ids, parts) if film_part == part}
            moved = extract_context_crops(dataset.with_records(r for r in dataset.records if r.image_id in films),
                                          workers=workers, progress=progress, off_bone_seed=config.seed)
            found = [c[config.bone] for c in moved.values() if config.bone in c]
            if config.off_bone_other_bone:
                other = next(b for b in BONES if b != config.bone)
                found += [crops[i][other] for i in ids if i in films and other in crops[i]]
            if config.off_bone_strays:
                found += stray_crops(dataset, films, config.bone, workers, progress)
            if not found:
                raise ValueError(f"{dataset.root}: no place off the bones of the {part} films for an off-bone "
                                 f"{config.bone} crop")
            off_bone[part] = torch.from_numpy(np.stack(found))[:, None]
    return AgedCrops(torch.from_numpy(np.stack(arrays))[:, None], torch.from_numpy(np.stack(targets)),
                     np.array(ages), sexes, ids, np.array(parts), off_bone["train"], off_bone["validation"])


def stray_crops(dataset: Dataset, films: set[str], bone: str, workers: int = 1, progress: bool = True
                ) -> list[np.ndarray]:
    """``bone`` crops of the detector's stray candidates on ``films`` (the dataset manifest's
    ``stray_boxes``, written by ``training.aged.detect_aged_films``), mirrored as the film's bones are."""
    if "stray_boxes" not in dataset.manifest:
        log.warning("%s: no stray_boxes in its manifest (boxed without a detector, or before they were "
                    "recorded): no stray crops; box it again with drustage crop --detector", dataset.root)
    strays = dataset.manifest.get("stray_boxes", {})
    records = [replace(record, image_id=f"{record.image_id}~stray{k}", boxes={bone: tuple(box)})
               for record in dataset.records if record.image_id in films
               for k, box in enumerate(strays.get(record.image_id, []))]
    if not records:
        return []
    crops = extract_context_crops(dataset.with_records(records), workers=workers, progress=progress)
    return [c[bone] for c in crops.values() if bone in c]


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Oversample every class (with replacement beyond its own items) to the majority count."""
    counts = np.bincount(labels)
    target = counts.max()
    picked = []
    for cls in np.flatnonzero(counts):
        members = np.flatnonzero(labels == cls)
        extra = rng.choice(members, target - len(members), replace=True) if target > len(members) else []
        picked.append(np.concatenate([members, extra]).astype(int))
    return np.concatenate(picked)
