"""Batches of files through a Predictor: inputs (files, folders, a manifest CSV), one JSON and one
overlay per radiograph (DICOM SR/SC and FHIR on request), worker processes, and ``summary.csv``.
Bad items are reported one line each and the batch goes on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drustage.growth import PatientInfo
from drustage.io_utils import file_sha256, printable
from drustage.pipeline import Predictor
from drustage.stages import BONES

__all__ = ["OutputOptions", "expand_inputs", "predict_file", "predict_files", "read_manifest", "summary_rows",
           "unique_stems", "write_summary"]


MANIFEST_COLUMN = "path"


def read_manifest(manifest: Path) -> list[Path]:
    """The images a manifest CSV lists, one per row in its ``path`` column (relative paths are
    relative to the manifest's folder): how an archive names the films of a run."""
    import csv

    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if MANIFEST_COLUMN not in (reader.fieldnames or []):
            raise ValueError(f"{printable(manifest)}: a manifest needs a {MANIFEST_COLUMN!r} column")
        return [manifest.parent / row[MANIFEST_COLUMN].strip() for row in reader if row[MANIFEST_COLUMN].strip()]


def expand_inputs(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Files as given; folders (a DICOM series, an export) expand to the images inside them, a
    manifest ``.csv`` to the images it lists. Returns the files and one line per folder that holds
    none and per unreadable manifest (the batch goes on without it)."""
    from drustage.data.labels import list_images

    files: list[Path] = []
    problems: list[str] = []
    for path in map(Path, paths):
        if path.suffix.lower() == ".csv" and path.is_file():
            try:
                files.extend(read_manifest(path))
            except (ValueError, OSError, UnicodeDecodeError) as error:
                problems.append(printable(str(error)))
        elif path.is_dir():
            try:
                files.extend(list_images(path))
            except ValueError as error:
                problems.append(str(error))
        else:
            files.append(path)
    return files, problems


# Output names stay well inside the usual 255-byte file-name limit with their suffixes.
MAX_STEM_CHARS = 120


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet shows as text: one starting like a formula (``=``, ``+``, ``-``,
    ``@``, tab, return) gets a leading apostrophe (OWASP's CSV-injection advice)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names per input; two inputs with one name in different folders get distinct stems."""
    stems, used = [], set()
    for path in paths:
        stem = path.stem[:MAX_STEM_CHARS]
        while stem in used:
            stem += "_"
        used.add(stem)
        stems.append(stem)
    return stems


@dataclass(frozen=True)
class OutputOptions:
    """What ``predict_file`` writes besides ``<stem>.json`` and ``<stem>.overlay.png``."""

    gradcam: bool = False  # Grad-CAM heatmaps on the overlay's crops
    dicom_out: Path | None = None  # DICOM SR + Secondary Capture (DICOM inputs only) in this folder
    fhir_out: Path | None = None  # FHIR Observations (``<stem>.fhir.json``) in this folder


def predict_file(predictor: Predictor, path: Path, stem: str, out: Path, options: OutputOptions = OutputOptions(),
                 given: dict | None = None, patient: PatientInfo | None = None) -> dict:
    """Predict one radiograph and write ``<stem>.json``, ``<stem>.overlay.png`` and what ``options``
    asks for, each atomically; every output is built before the first is written, so a file that
    cannot be read or reported gives a ``ValueError`` naming it and nothing on disk."""
    import json

    from drustage import __version__
    from drustage.gradcam import grad_cam
    from drustage.imaging import dicom_patient_sex_age, load_radiograph
    from drustage.io_utils import atomic_path, atomic_write_text
    from drustage.viz import render_overlay

    radiograph = load_radiograph(path)
    if patient is None:  # a DICOM's own PatientSex/PatientAge, for the checks only
        sex, age = dicom_patient_sex_age(path)
        patient = PatientInfo(sex, age) if sex or age is not None else None
    result, crops = predictor.predict_with_crops(radiograph, file_sha256(path), given, patient)
    report = result.to_dict()
    heatmaps = None
    if options.gradcam:
        heatmaps = {bone: grad_cam(predictor.torch_classifier(bone), crop) for bone, crop in crops.items()}
    files = {"json": f"{stem}.json", "overlay": f"{stem}.overlay.png"}
    overlay = render_overlay(radiograph.image, result, crops, heatmaps)
    dicom = header = None
    if (options.dicom_out is not None or options.fhir_out is not None) and radiograph.meta.format == "dicom":
        from drustage.outputs.dicom import read_source_header

        header = read_source_header(path)  # the FHIR Observations name its study too
    if options.dicom_out is not None and header is not None:
        from drustage.outputs.dicom import dicom_outputs, not_a_hand_radiograph

        reason = not_a_hand_radiograph(header)
        if reason:
            raise ValueError(f"{printable(path)}: no DICOM outputs: {reason}")
        dicom = dicom_outputs(header, report, np.asarray(overlay), __version__)
        files.update(structured_report=f"{stem}.sr.dcm", secondary_capture=f"{stem}.sc.dcm")
    fhir = None
    if options.fhir_out is not None:
        from drustage.outputs.fhir import observation_bundle

        study = getattr(header, "StudyInstanceUID", None)
        fhir = json.dumps(observation_bundle(report, __version__, str(study) if study else None), indent=2) + "\n"
        files["fhir"] = f"{stem}.fhir.json"
    report["files"] = files
    if dicom is not None:
        from drustage.outputs.dicom import write_dicom_outputs

        write_dicom_outputs(dicom, options.dicom_out, stem)
    if fhir is not None:
        options.fhir_out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(options.fhir_out / files["fhir"], fhir)
    with atomic_path(out / f"{stem}.overlay.png") as tmp:
        overlay.save(tmp, format="PNG")
    atomic_write_text(out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    return report


_worker_predictor: Predictor | None = None


def _start_worker(source: str, settings: dict, threads: int) -> None:
    global _worker_predictor
    from drustage.inference.bundle import load_bundle

    torch.set_num_threads(threads)
    _worker_predictor = Predictor(load_bundle(source), **settings, threads=threads)


def _worker_task(task) -> dict | str:
    try:
        return predict_file(_worker_predictor, *task)
    except (ValueError, OSError) as error:  # one bad item (unreadable, bad box, unwritable name): the batch goes on
        return printable(str(error))


def predict_files(predictor: Predictor, paths: list[Path], out: str | Path, gradcam: bool = False,
                  progress: bool = True, boxes: dict | None = None, workers: int = 1,
                  patients: dict[str, PatientInfo] | None = None, dicom_out: str | Path | None = None,
                  fhir_out: str | Path | None = None) -> tuple[list[dict], list[str]]:
    """Per radiograph ``<stem>.json`` and ``<stem>.overlay.png`` in ``out``, and ``summary.csv``;
    with ``dicom_out`` a DICOM SR and Secondary Capture per DICOM input, with ``fhir_out`` FHIR
    Observations per input (see ``OutputOptions``).

    ``boxes`` (``{file name: {bone: box}}``, from ``read_boxes``) replaces detection for the
    files it names; ``patients`` (``{file name: PatientInfo}``) adds the age checks. ``workers`` > 1
    runs that many processes, each with its own copy of the models and an equal share of the CPU
    threads. Bad files are reported and skipped; returns (reports in input order, one-line failures).
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = OutputOptions(gradcam, None if dicom_out is None else Path(dicom_out),
                            None if fhir_out is None else Path(fhir_out))
    tasks, failures = [], []
    for path, stem in zip(paths, unique_stems(paths)):
        given = None if boxes is None else boxes.get(path.name)
        if boxes is not None and given is None:
            failures.append(f"{printable(path)}: no boxes given for this file")
            continue
        tasks.append((path, stem, out, options, given, (patients or {}).get(path.name)))
    bar = tqdm(total=len(tasks), desc="predict", unit="img", disable=not progress or len(tasks) < 2)
    outcomes: list[dict | str] = []
    if workers > 1 and len(tasks) > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                                 initargs=(str(predictor.bundle.source), predictor.settings, threads)) as pool:
            for outcome in pool.map(_worker_task, tasks):
                outcomes.append(outcome)
                bar.update()
    else:
        for task in tasks:
            try:
                outcomes.append(predict_file(predictor, *task))
            except (ValueError, OSError) as error:
                outcomes.append(printable(str(error)))
            bar.update()
    bar.close()
    reports = [o for o in outcomes if isinstance(o, dict)]
    failures += [o for o in outcomes if isinstance(o, str)]
    write_summary(out, reports)
    return reports, failures


SUMMARY_COLUMNS = ("source", "radius_prediction", "radius_phase", "radius_confidence", "ulna_prediction",
                   "ulna_phase", "ulna_confidence", "guidance", "needs_review", "review_reasons")


def summary_rows(reports: list[dict]) -> list[dict]:
    """One flat row per report (the columns of ``summary.csv``)."""
    return [{"source": report["source"],
             **{f"{b}_{k}": report[b][k] for b in BONES for k in ("prediction", "phase", "confidence")},
             "guidance": (report["guidance"] or {}).get("rule", ""),
             "needs_review": report["needs_review"], "review_reasons": "; ".join(report["review_reasons"])}
            for report in reports]


def write_summary(out: Path, reports: list[dict]) -> None:
    """``summary.csv``, atomically; sources that look like formulas are written as text."""
    import csv
    import io

    from drustage.io_utils import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in summary_rows(reports):
        writer.writerow({**row, "source": spreadsheet_safe(row["source"])})
    atomic_write_text(out / "summary.csv", buffer.getvalue())
