"""A dataset of real films with an age and sex, boxed by a detector, for weak supervision.

The classifiers see real films through the detector's boxes at prediction time, so they learn
from the same boxes: every film is detected once, its boxes, the side they imply, its sex and age
are written to an ordinary dataset whose images link to the films (never copied).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from drustage.data.aged_films import AgedFilm
from drustage.data.layout import Dataset, Record, read_dataset, write_labels, write_manifest

log = logging.getLogger(__name__)


def detect_aged_films(detector: str | Path, films: list[AgedFilm], out: str | Path, progress: bool = True
                      ) -> tuple[Dataset, list[str]]:
    """Detect both bones on every film and write ``out`` as a dataset (images linked), with each
    film's stray candidates in its manifest (``stray_boxes``: off-bone crops for the classifiers);
    returns it and one line per film that could not be read (the rest go on)."""
    from tqdm import tqdm

    from drustage.imaging import load_radiograph
    from drustage.inference.detector import Detector
    from drustage.data.laterality import hand_side

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    model = Detector.from_checkpoint(detector)
    records, problems, keys, strays = [], [], {}, {}
    for index, film in enumerate(tqdm(films, desc="detect aged films", unit="img", disable=not progress)):
        try:
            image = load_radiograph(film.path).image
        except ValueError as error:
            problems.append(str(error))
            continue
        found, film_strays = model.detect(image)
        boxes = {bone: d.box for bone, d in found.items() if d.box is not None}
        image_id = f"{index:05d}-{film.path.stem}"
        relative = f"images/{image_id}{film.path.suffix.lower()}"
        target = out / relative
        target.unlink(missing_ok=True)
        os.symlink(film.path.resolve(), target)
        records.append(Record(image_id=image_id, file=relative, laterality=hand_side(image, boxes)[0], sex=film.sex,
                              age_years=round(film.age_years, 4), boxes=boxes))
        keys[image_id] = film.key
        if film_strays:
            strays[image_id] = film_strays
    write_labels(out, records)
    write_manifest(out, source="drustage detect_aged_films", detector=str(detector), keys=keys,
                   stray_boxes=strays)
    for problem in problems:
        log.warning("skipped: %s", problem)
    return read_dataset(out), problems


def image_id_splits(dataset: Dataset, splits: dict[str, str]) -> dict[str, str]:
    """The film-key split (``annotations/real/maturity_split.csv``) as ``{image_id: split}``."""
    keys = dataset.manifest.get("keys", {})
    return {image_id: splits[key] for image_id, key in keys.items() if key in splits}
