import csv
import json

import pytest

from drustage.cli import main
from drustage.evaluation.maturity import readings_from_reports, write_validation, worst_readings


def test_readings_pair_reports_with_the_sheet_and_report_the_rest(aged_case):
    films, reports = aged_case()
    stray = dict(reports[0], source="stray.png")
    readings, problems = readings_from_reports(reports[1:] + [stray], films)
    assert len(readings) == 2 * (len(films) - 1)
    assert any("stray.png: no row in the age sheet" in p for p in problems)
    assert any(f"{films[0].path.name}: in the age sheet, no prediction" in p for p in problems)
    young = next(r for r in readings if r.source == films[1].path.name and r.bone == "radius")
    assert young.implausible and "R11 is implausible for the patient's age (more than 4 y before" in young.implausible
    assert young.expected_class > 10


def test_validation_reports_correlation_implausible_reads_and_pictures(aged_case, tmp_path):
    films, reports = aged_case()
    readings, problems = readings_from_reports(reports, films)
    metrics = write_validation(readings, problems, tmp_path / "v")
    for name in ("validation.json", "report.md", "report.html", "cases.csv", "age_by_stage.png", "reliability.png",
                 "worst_readings.png"):
        assert (tmp_path / "v" / name).is_file(), name
    ulna = metrics.bones["ulna"]
    assert ulna["F"].spearman > 0.9 and ulna["M"].spearman > 0.9 and ulna["F"].implausible == 0
    radius = metrics.bones["radius"]
    assert radius["F"].implausible + radius["M"].implausible == 2
    assert metrics.implausible_unflagged_films == 1  # film 1: read mature at 3 y and not flagged
    assert metrics.implausible_unflagged_share == pytest.approx(1 / len(films))
    assert radius["F"].per_class["R7"].published_mean_age == 11.4
    # without film 0's uncertain box the girls' radius reads in age order; given boxes count as sure
    assert radius["F"].confident_boxes == radius["F"].n - 1 and radius["M"].confident_boxes == radius["M"].n
    assert radius["F"].spearman_confident_boxes > radius["F"].spearman + 0.05
    assert radius["M"].spearman_confident_boxes == radius["M"].spearman
    assert ulna["F"].spearman_confident_boxes == ulna["F"].spearman
    worst = worst_readings(readings)
    assert worst[0].implausible and not worst[0].needs_review
    with open(tmp_path / "v/cases.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(readings)
    report = (tmp_path / "v/report.md").read_text()
    assert "implausible, not flagged" in report and "Spearman, boxes given or scoring ≥ 0.8 (n)" in report
    stored = json.loads((tmp_path / "v/validation.json").read_text())
    assert stored == json.loads(json.dumps(metrics.to_dict())) and stored["films"] == len(films)
    assert stored["bones"]["radius"]["F"]["per_class"]["R7"]["published_mean_age"] == 11.4


def test_cli_validate_from_predictions(aged_case, quick_dataset, tmp_path, capsys):
    films, reports = aged_case(wrong_flagged=False)
    predictions = tmp_path / "pred"
    predictions.mkdir()
    for report in reports:
        (predictions / f"{report['source']}.json").write_text(json.dumps(report))
    (predictions / "summary.json").write_text("[1, 2]")  # not a report: ignored
    sheet = tmp_path / "ages.csv"
    sheet.write_text("file,age_years,sex\n" + "".join(f"{f.path.name},{f.age_years},{f.sex}\n" for f in films))
    assert main(["validate", "--sheet", str(sheet), "--predictions", str(predictions), "--out",
                 str(tmp_path / "v"), "--images-root", str(quick_dataset / "images"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "implausible readings without a review flag: 2 of 12 films" in out
    assert "on the 5 boxes needing no review" in out  # the girls' radius: film 0's box scored 0.6
    assert main(["validate", "--sheet", str(sheet), "--predictions", str(tmp_path), "--out",
                 str(tmp_path / "w")]) == 1
    assert "no prediction reports" in capsys.readouterr().err


def test_withheld_readings_are_counted_beside_the_figures_and_shown(aged_case, tmp_path):
    films, reports = aged_case()
    full = write_validation(*readings_from_reports(reports, films), tmp_path / "full")
    withheld = reports[2]["radius"]
    withheld.update(prediction=None, phase=None, confidence=None, phase_confidence=None)
    reports[3]["ulna"].update(found=False, prediction=None, box=None)
    readings, problems = readings_from_reports(reports, films)
    assert [p for p in problems if "not read" in p] == [f"{films[3].path.name}: ulna not read (ulna not found)"]
    assert [(r.source, r.bone) for r in readings if r.prediction is None] == [(films[2].path.name, "radius")]
    metrics = write_validation(readings, problems, tmp_path / "v")
    sex = films[2].sex
    assert metrics.bones["radius"][sex].withheld == 1 and metrics.bones["radius"][sex].n == \
        full.bones["radius"][sex].n - 1
    assert metrics.bones["ulna"][films[3].sex].withheld == 0
    assert metrics.films == full.films  # a film with one bone withheld still counts
    assert (tmp_path / "v/withheld_readings.png").is_file() and not (tmp_path / "full/withheld_readings.png").exists()
    report = (tmp_path / "v/report.md").read_text()
    assert "withheld (no readable bone)" in report and "withheld_readings.png" in report
    assert "withheld_readings.png" not in (tmp_path / "full/report.md").read_text()
    with open(tmp_path / "v/cases.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(readings) and sum(row["prediction"] == "" for row in rows) == 1
    assert all(r.prediction is not None for r in worst_readings(readings))
