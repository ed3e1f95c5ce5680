"""Write phantom datasets in the drustage layout, with presets and a worker pool."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from drustage.data.layout import Record, write_labels, write_manifest
from drustage.imaging import to_uint16
from drustage.io_utils import atomic_path, save_png
from drustage.synth.maturity import StageQuota, Subject, sample_cohort
from drustage.synth.phantom import render_phantom

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SynthConfig:
    count: int
    seed: int = 0
    age_range: tuple[float, float] = (4.0, 18.5)
    quotas: tuple[StageQuota, ...] = ()
    image_scale: float = 1.0  # 1.0 gives 900-1500 x 1000-1800 pixel radiographs
    image_format: str = "png"  # "png" (16-bit) or "dicom"
    variety: str = "standard"  # "wide": also small hands in film frames, wrist views, dark films
    tilt_deg: float = 6.0  # standard deviation of the forearm's angle to the film's vertical axis


# The paper's sets need, per phase: ulna peak 200, deceleration 250, mature 150; radius
# pre-peak 75 from R5-R6, peak 96 (R7), deceleration 175, mature 75 (dru-method.md).
PAPER_QUOTAS = (
    StageQuota("radius", 5, 6, 75),
    StageQuota("radius", 7, 7, 96),
    StageQuota("radius", 8, 9, 175),
    StageQuota("radius", 10, 11, 75),
    StageQuota("ulna", 4, 5, 200),
    StageQuota("ulna", 6, 7, 250),
    StageQuota("ulna", 8, 9, 150),
)

PRESETS: dict[str, SynthConfig] = {
    "quick": SynthConfig(count=12, seed=0, image_scale=0.5),
    "paper": SynthConfig(count=1101, seed=2019, age_range=(6.0, 18.5), quotas=PAPER_QUOTAS),
    # For the detector: infants to adults and the film types of real archives.
    "detector": SynthConfig(count=1200, seed=4242, age_range=(1.0, 18.5), variety="wide"),
}


def get_preset(name: str) -> SynthConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _image_seed(seed: int, index: int) -> np.random.Generator:
    # Each image has its own stream, so output does not depend on the number of workers.
    return np.random.default_rng(np.random.SeedSequence([seed, index, GENERATOR_VERSION]))


def _render_one(task: tuple[int, Subject, SynthConfig, str]) -> Record:
    index, subject, config, root = task
    phantom = render_phantom(subject, _image_seed(config.seed, index), config.image_scale, config.variety,
                             config.tilt_deg)
    image_id = f"phantom-{index:05d}"
    suffix = ".dcm" if config.image_format == "dicom" else ".png"
    relative = f"images/{image_id}{suffix}"
    path = Path(root) / relative
    if config.image_format == "dicom":
        write_dicom(path, to_uint16(phantom.image), phantom.pixel_spacing_mm, phantom.laterality, image_id,
                    subject.sex, subject.age_years, config.seed)
    else:
        save_png(path, to_uint16(phantom.image))
    return Record(
        image_id=image_id,
        file=relative,
        laterality=phantom.laterality,
        sex=subject.sex,
        age_years=subject.age_years,
        stages={"radius": subject.radius_stage, "ulna": subject.ulna_stage},
        boxes=dict(phantom.boxes),
    )


def write_dicom(path: Path, pixels: np.ndarray, spacing_mm: float, laterality: str, image_id: str,
                sex: str | None = None, age_years: float | None = None, seed: int = 0) -> None:
    """A digital X-ray (DX, for presentation) of a phantom, one study per phantom; no real patient
    data (it is synthetic), UIDs derived from ``image_id`` and the dataset's ``seed``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[image_id, str(seed)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[image_id, str(seed), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[image_id, str(seed), "series"])
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AccessionNumber = "1", 1, 1, ""
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20260101", "120000", ""
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "HAND", "PA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientName = "PHANTOM^"
    ds.PatientID = image_id
    ds.PatientBirthDate = ""
    ds.PatientSex = sex or ""
    if age_years is not None:
        ds.PatientAge = f"{min(999, int(age_years)):03d}Y"
    ds.ImageLaterality = laterality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def generate_dataset(out: str | Path, config: SynthConfig, workers: int | None = None,
                     progress: bool = True, preset: str | None = None) -> list[Record]:
    """Render ``config.count`` phantoms into ``out`` (the drustage dataset layout)."""
    from tqdm import tqdm

    if config.image_format not in ("png", "dicom"):
        raise ValueError(f"image format must be png or dicom, got {config.image_format!r}")
    if config.variety not in ("standard", "wide"):
        raise ValueError(f"variety must be standard or wide, got {config.variety!r}")
    if config.image_scale <= 0:
        raise ValueError(f"image scale must be positive, got {config.image_scale}")
    if not 0 <= config.tilt_deg <= 45:
        raise ValueError(f"tilt must be 0-45 degrees, got {config.tilt_deg}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    subjects = sample_cohort(config.count, config.seed, config.age_range, config.quotas)
    tasks = [(i, s, config, str(out)) for i, s in enumerate(subjects)]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(tasks), desc="phantoms", unit="img", disable=not progress)
    records: list[Record] = []
    if workers == 1:
        for task in tasks:
            records.append(_render_one(task))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for record in pool.map(_render_one, tasks, chunksize=4):
                records.append(record)
                bar.update()
    bar.close()
    write_labels(out, records)
    settings = asdict(config)
    settings["quotas"] = [asdict(q) for q in config.quotas]
    write_manifest(out, source="drustage synth", generator_version=GENERATOR_VERSION, preset=preset,
                   synth_config=settings)
    return records


def with_overrides(config: SynthConfig, count: int | None = None, seed: int | None = None,
                   image_scale: float | None = None, image_format: str | None = None,
                   tilt_deg: float | None = None) -> SynthConfig:
    changes = {k: v for k, v in (("count", count), ("seed", seed), ("image_scale", image_scale),
                                 ("image_format", image_format), ("tilt_deg", tilt_deg)) if v is not None}
    return replace(config, **changes)


def stage_counts(records: list[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        for stage in record.stages.values():
            counts[stage.code] = counts.get(stage.code, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (kv[0][0], int(kv[0][1:]))))

