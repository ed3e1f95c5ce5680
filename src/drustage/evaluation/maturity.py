"""``drustage validate``: check a bundle's readings on real films against the patients' ages.

No public film has DRU stages, but every film with an age says a lot about its stages: readings
must rise with age, sit near the growth table's mean age per stage, and never be implausible for
the age. Per bone and sex this reports the Spearman correlation of the expected stage (the
probability-weighted class) with age, the ages per predicted stage beside the growth table's
means, the implausible readings (``growth.implausible_for_age``) and how many of them the
predictor left unflagged, and a reliability diagram of the phase confidence against the phase the
age implies; the Spearman correlation again over the films whose box needs no review (given, or
detected with a score of at least ``REVIEW_DETECTION_SCORE``) tells the classifier's share of
the figure from the detector's failures. Readings the predictor withheld (a box showing no
readable bone) are counted beside the figures, which cover the films read, and shown on a sheet
of their own. Writes ``validation.json``, ``report.md``, ``report.html``, ``cases.csv`` and the
pictures.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from drustage.data.aged_films import AgedFilm
from drustage.growth import PLAUSIBLE_AGE_MARGIN_YEARS, PatientInfo, expected_stage_for_age, mean_age_at
from drustage.io_utils import atomic_write_text
from drustage.stages import BONES, PHASES, get_scheme
from drustage.thresholds import REVIEW_DETECTION_SCORE

SEX_NAMES = {"F": "girls", "M": "boys"}


@dataclass(frozen=True)
class Reading:
    """One film's reading of one bone, beside the patient's age and sex; ``prediction`` None: the
    predictor withheld the reading (no readable bone in the box, or, for the detector's ulna box, in
    its radius box), and the figures leave it out."""

    source: str
    path: str
    bone: str
    sex: str | None
    age_years: float
    scheme: str
    prediction: str | None
    phase: str | None
    confidence: float | None
    phase_confidence: float | None
    expected_class: float | None  # probability-weighted class index (1-based for stages)
    age_phase: str  # the phase the growth table gives this age
    implausible: str | None  # the reason, or None
    needs_review: bool
    box: tuple[float, float, float, float]
    detection_score: float | None  # None: the box was given, not detected


def readings_from_reports(reports: list[dict], films: list[AgedFilm]) -> tuple[list[Reading], list[str]]:
    """Pair prediction reports with the sheet's films by file name; one line per report without a
    film, per film without a report and per bone not found (those count as not read). A bone
    found whose reading was withheld is a reading with no prediction."""
    from drustage.pipeline import implausible_reading

    by_name: dict[str, AgedFilm] = {}
    for film in films:
        by_name.setdefault(film.path.name, film)
    readings, problems = [], []
    seen = set()
    for report in reports:
        film = by_name.get(report["source"])
        if film is None:
            problems.append(f"{report['source']}: no row in the age sheet")
            continue
        seen.add(report["source"])
        patient = PatientInfo(film.sex, film.age_years)
        for bone in BONES:
            result = report[bone]
            if not result.get("found"):
                problems.append(f"{report['source']}: {bone} not read ({bone} not found)")
                continue
            scheme = get_scheme(result["scheme"], bone)
            film_fields = dict(
                source=report["source"], path=str(film.path), bone=bone, sex=film.sex, age_years=film.age_years,
                scheme=scheme.name, age_phase=expected_stage_for_age(bone, film.age_years, film.sex).phase,
                needs_review=bool(report["needs_review"]), box=tuple(result["box"]),
                detection_score=result.get("detection_score"))
            if not result.get("prediction"):  # withheld: no readable bone in the box
                readings.append(Reading(**film_fields, prediction=None, phase=None, confidence=None,
                                        phase_confidence=None, expected_class=None, implausible=None))
                continue
            probabilities = np.array([result["probabilities"][c] for c in scheme.classes])
            offset = 1 if scheme.name == "stage" else 0
            readings.append(Reading(
                **film_fields, prediction=result["prediction"], phase=result["phase"],
                confidence=float(result["confidence"]),
                phase_confidence=float(result.get("phase_confidence") or result["confidence"]),
                expected_class=float(probabilities @ np.arange(offset, len(probabilities) + offset)),
                implausible=implausible_reading(scheme, result["prediction"], patient)))
    problems += [f"{f.path.name}: in the age sheet, no prediction" for f in films if f.path.name not in seen]
    return readings, problems


def _published_age(scheme_name: str, bone: str, class_name: str, sex: str | None) -> float:
    scheme = get_scheme(scheme_name, bone)
    stages = scheme.stages_of(scheme.classes.index(class_name))
    return float(np.mean([mean_age_at(s, sex) for s in stages]))


@dataclass(frozen=True)
class ClassAges:
    """The ages of the films read as one class, beside the growth table's."""

    n: int
    median_age: float | None
    published_mean_age: float


@dataclass(frozen=True)
class BoneSexValidation:
    """Figures for one bone and one sex."""

    n: int  # films read
    withheld: int  # films whose reading the predictor withheld (no readable bone in the box)
    spearman: float | None  # expected class against age; None when it cannot be computed
    # the same over the films whose box was given or detected with a score needing no review:
    # the classifier's share of the figure, apart from the detector's failures
    confident_boxes: int
    spearman_confident_boxes: float | None
    per_class: dict[str, ClassAges]
    implausible: int
    implausible_unflagged: int
    flagged: int
    phase_agrees_with_age: float
    phase_ece_against_age: float
    reliability: tuple[dict, ...]  # reliability_table's bins


@dataclass(frozen=True)
class MaturityValidation:
    """``bones[bone][sex]`` figures plus the totals the targets are stated in."""

    bones: dict[str, dict[str, BoneSexValidation]]
    films: int
    implausible_unflagged_films: int
    problems: tuple[str, ...] = ()
    rule: str = (f"a reading is implausible when the patient's age lies more than {PLAUSIBLE_AGE_MARGIN_YEARS:g} y "
                 "from the growth table's mean age of the read stage (sex-specific; no upper limit for the last "
                 "stage, no lower one for the first)")

    @property
    def implausible_unflagged_share(self) -> float:
        return self.implausible_unflagged_films / max(self.films, 1)

    def to_dict(self) -> dict:
        """``validation.json``'s data."""
        return {"bones": {bone: {sex: asdict(m) for sex, m in by_sex.items()} for bone, by_sex in self.bones.items()},
                "films": self.films, "implausible_unflagged_films": self.implausible_unflagged_films,
                "implausible_unflagged_share": self.implausible_unflagged_share, "rule": self.rule,
                "problems": list(self.problems)}


def _spearman(readings: list[Reading]) -> float | None:
    from drustage.evaluation.classification import rank_correlation

    return rank_correlation([r.expected_class for r in readings], [r.age_years for r in readings])


def bone_sex_metrics(readings: list[Reading]) -> BoneSexValidation:
    """Figures for one bone and one sex (over the films read; the withheld ones counted)."""
    from drustage.evaluation.classification import expected_calibration_error, reliability_table

    withheld = sum(r.prediction is None for r in readings)
    readings = read_only(readings)
    if not readings:
        return BoneSexValidation(0, withheld, None, 0, None, {}, 0, 0, 0, float("nan"), float("nan"), ())
    ages = np.array([r.age_years for r in readings])
    confident = [r for r in readings if r.detection_score is None or r.detection_score >= REVIEW_DETECTION_SCORE]
    scheme = readings[0].scheme
    classes = get_scheme(scheme, readings[0].bone).classes
    per_class = {}
    for name in classes:
        members = ages[[r.prediction == name for r in readings]]
        per_class[name] = ClassAges(int(len(members)), float(np.median(members)) if len(members) else None,
                                    round(_published_age(scheme, readings[0].bone, name, readings[0].sex), 2))
    agree = np.array([r.phase == r.age_phase for r in readings])
    confidence = np.array([r.phase_confidence for r in readings])
    implausible = [r for r in readings if r.implausible]
    return BoneSexValidation(
        n=len(readings),
        withheld=withheld,
        spearman=_spearman(readings),
        confident_boxes=len(confident),
        spearman_confident_boxes=_spearman(confident),
        per_class=per_class,
        implausible=len(implausible),
        implausible_unflagged=sum(not r.needs_review for r in implausible),
        flagged=sum(r.needs_review for r in readings),
        phase_agrees_with_age=float(agree.mean()),
        phase_ece_against_age=expected_calibration_error(confidence, agree),
        reliability=tuple(reliability_table(confidence, agree)),
    )


def validation_metrics(readings: list[Reading], problems: Sequence[str] = ()) -> MaturityValidation:
    """Every bone's and sex's figures, and how many films were read implausibly without a flag."""
    bones = {}
    for bone in BONES:
        bones[bone] = {}
        for sex in ("F", "M"):
            subset = [r for r in readings if r.bone == bone and r.sex == sex]
            if subset:
                bones[bone][sex] = bone_sex_metrics(subset)
    unflagged = {r.source for r in readings if r.implausible and not r.needs_review}
    return MaturityValidation(bones, len({r.source for r in readings}), len(unflagged), tuple(problems))


def read_only(readings: list[Reading]) -> list[Reading]:
    """The readings the predictor gave (not withheld)."""
    return [r for r in readings if r.prediction is not None]


def plot_age_by_stage(readings: list[Reading], path: Path) -> Path:
    """Ages per predicted class (points and box) beside the growth table's mean age (diamonds)."""
    from drustage.evaluation.classification import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100, squeeze=False)
    rng = np.random.default_rng(0)
    for row, bone in enumerate(BONES):
        for col, sex in enumerate(("F", "M")):
            ax = axes[row][col]
            subset = [r for r in read_only(readings) if r.bone == bone and r.sex == sex]
            ax.set(title=f"{bone}, {SEX_NAMES[sex]} (n={len(subset)})", ylabel="age (years)")
            if not subset:
                continue
            classes = get_scheme(subset[0].scheme, bone).classes
            groups = [[r.age_years for r in subset if r.prediction == name] for name in classes]
            ax.boxplot([g or [np.nan] for g in groups], positions=range(len(classes)), widths=0.5, showfliers=False)
            for k, group in enumerate(groups):
                colours = ["#d62728" if r.implausible else "#1f77b4"
                           for r in subset if r.prediction == classes[k]]
                ax.scatter(k + rng.uniform(-0.18, 0.18, len(group)), group, s=9, alpha=0.6, c=colours)
            ax.scatter(range(len(classes)), [_published_age(subset[0].scheme, bone, name, sex) for name in classes],
                       marker="D", color="#ff7f0e", zorder=3, label="growth table mean age")
            ax.set_xticks(range(len(classes)), classes)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Age per predicted class (red points: implausible for the age)", fontsize=11)
    return save_figure(fig, path)


def worst_readings(readings: list[Reading], count: int = 24) -> list[Reading]:
    """Implausible readings first (unflagged before flagged), then the furthest from the age."""
    def distance(r: Reading) -> float:
        return abs(PHASES.index(r.phase) - PHASES.index(r.age_phase))
    return sorted(read_only(readings), key=lambda r: (r.implausible is None, r.needs_review, -distance(r)))[:count]


def readings_sheet(readings: list[Reading], path: Path) -> Path:
    """Wrist views of readings with their box, the reading and the patient's age."""
    from drustage.imaging import load_radiograph
    from drustage.models.detector import Detection
    from drustage.viz import detection_sheet

    panels = []
    for r in readings:
        try:
            image = load_radiograph(r.path).image
        except (ValueError, OSError):  # a film moved since it was read: left off the sheet
            continue
        flag = ("IMPLAUSIBLE, " if r.implausible else "") + ("flagged" if r.needs_review else "not flagged")
        reading = "withheld" if r.prediction is None else f"{r.prediction} {r.confidence:.0%}"
        title = f"{Path(r.source).stem} {r.sex or '?'} {r.age_years:.1f}y {r.bone} {reading} {flag}"
        score = 1.0 if r.detection_score is None else r.detection_score  # a given box is sure
        panels.append((image, {r.bone: Detection(r.bone, r.box, score)}, None, title))
    return detection_sheet(panels, path, columns=4, cell=320)


def write_validation(readings: list[Reading], problems: list[str], out: str | Path,
                     title: str = "") -> MaturityValidation:
    """Every output of ``drustage validate`` in ``out``; returns the metrics."""
    from drustage.evaluation.classification import plot_reliability

    if not read_only(readings):
        raise ValueError("no readings to validate: no prediction matched a film of the age sheet")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = validation_metrics(readings, problems)
    plot_age_by_stage(readings, out / "age_by_stage.png")
    plot_reliability({f"{bone} {SEX_NAMES[sex]}": list(figures.reliability)
                      for bone, by_sex in metrics.bones.items() for sex, figures in by_sex.items()},
                     out / "reliability.png", "phase confidence against the age's phase")
    worst = worst_readings(readings)
    readings_sheet(worst, out / "worst_readings.png")
    withheld = [r for r in readings if r.prediction is None]
    if withheld:
        readings_sheet(withheld[:24], out / "withheld_readings.png")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(readings[0])), lineterminator="\n")
    writer.writeheader()
    for r in readings:
        writer.writerow(asdict(r))
    atomic_write_text(out / "cases.csv", buffer.getvalue())
    markdown = validation_markdown(metrics, title)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", validation_html(metrics, title))
    atomic_write_text(out / "validation.json", json.dumps(metrics.to_dict(), indent=2) + "\n")
    return metrics


def summary_rows(metrics: MaturityValidation) -> list[list[str]]:
    rows = []
    for bone, by_sex in metrics.bones.items():
        for sex, m in by_sex.items():
            spearman = "—" if m.spearman is None else f"{m.spearman:.3f}"
            confident = "—" if m.spearman_confident_boxes is None else f"{m.spearman_confident_boxes:.3f}"
            rows.append([bone, SEX_NAMES[sex], str(m.n), str(m.withheld), spearman,
                         f"{confident} ({m.confident_boxes})",
                         f"{m.phase_agrees_with_age:.1%}",
                         f"{m.phase_ece_against_age:.3f}", str(m.implausible), str(m.implausible_unflagged),
                         str(m.flagged)])
    return rows


SUMMARY_HEADER = ["bone", "sex", "n read", "withheld (no readable bone)", "Spearman (expected stage, age)",
                  f"Spearman, boxes given or scoring ≥ {REVIEW_DETECTION_SCORE:g} (n)", "phase as the age's",
                  "ECE vs the age's phase", "implausible", "implausible, not flagged", "flagged for review"]


def validation_markdown(metrics: MaturityValidation, title: str = "") -> str:
    lines = [f"# Maturity validation{': ' + title if title else ''}", "",
             f"{metrics.films} films; implausible readings without a review flag: "
             f"{metrics.implausible_unflagged_films} films ({metrics.implausible_unflagged_share:.1%}).",
             f"Rule: {metrics.rule}.", "",
             "| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(metrics)]
    lines += ["", "![ages per stage](age_by_stage.png)", "", "![reliability](reliability.png)", "",
              "Worst readings (implausible first):", "", "![worst readings](worst_readings.png)", ""]
    if _withheld_count(metrics):
        lines += ["Withheld readings (no readable bone in the box):", "",
                  "![withheld readings](withheld_readings.png)", ""]
    if metrics.problems:
        lines += [f"{len(metrics.problems)} item(s) not read:", ""]
        lines += [f"- {p}" for p in metrics.problems[:50]]
    return "\n".join(lines) + "\n"


def _withheld_count(metrics: MaturityValidation) -> int:
    return sum(m.withheld for by_sex in metrics.bones.values() for m in by_sex.values())


def validation_table_html(metrics: MaturityValidation) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in SUMMARY_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in summary_rows(metrics))
    return f"<table><tr>{head}</tr>{body}</table>"


def validation_html(metrics: MaturityValidation, title: str = "", prefix: str = "") -> str:
    """The report as a page, or (with ``prefix``, the folder the pictures are in) as a section."""
    section = (f"<p>{metrics.films} films; implausible readings without a review flag: "
               f"{metrics.implausible_unflagged_films} ({metrics.implausible_unflagged_share:.1%}). "
               f"Rule: {html.escape(metrics.rule)}.</p>{validation_table_html(metrics)}"
               f'<figure><img src="{prefix}age_by_stage.png" alt="ages per stage"></figure>'
               f'<figure><img src="{prefix}reliability.png" alt="reliability diagram"></figure>'
               f'<h3>Worst readings (implausible first)</h3>'
               f'<figure><img src="{prefix}worst_readings.png" alt="worst readings"></figure>')
    if _withheld_count(metrics):
        section += ('<h3>Withheld readings (no readable bone in the box)</h3>'
                    f'<figure><img src="{prefix}withheld_readings.png" alt="withheld readings"></figure>')
    if prefix:
        return section
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>maturity validation</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3rem .6rem}img{max-width:100%}</style></head><body>"
            f"<h1>Maturity validation{': ' + html.escape(title) if title else ''}</h1>{section}</body></html>\n")
