"""drustage experiments: the plan shares conditions, a run resumes, the report has every table."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from PIL import Image

from drustage.cli import main
from drustage.experiments import BUDGETS, EXPERIMENTS, plan, run_experiments, run_folder
from drustage.stages import BONES


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from drustage.synth.writer import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("experiments-data")
    generate_dataset(root, SynthConfig(count=60, seed=5, image_scale=0.25), workers=2, progress=False)
    return root


def test_cpu_plan_covers_every_experiment_once_per_condition():
    conditions = plan(BUDGETS["cpu"])
    keys = [c.key for c in conditions]
    assert len(keys) == len(set(keys)) == 34  # 17 distinct trainings per bone
    rows = {(e, c.config.bone, label) for c in conditions for e, label in c.rows}
    for bone in BONES:
        assert {e for e, b, _ in rows if b == bone} == set(EXPERIMENTS)
        assert sum(1 for e, b, _ in rows if b == bone and e == "networks") == 9
    # the augmented base network is table 5's second row and table 6's net3: trained once
    shared = next(c for c in conditions if ("networks", "net3") in c.rows and c.config.bone == "ulna")
    assert ("augmentation", "balanced x5") in shared.rows
    for condition in conditions:
        condition.config.validate()
        assert condition.config.epochs * condition.config.epoch_samples == 5000  # equal compute
    radius_sets = {c.config.min_stage for c in conditions if c.config.bone == "radius" and c.config.scheme != "stage"}
    assert radius_sets == {"R5"}  # the paper's radius set


def test_smoke_run_reports_and_resumes(small_dataset, tmp_path):
    out = tmp_path / "experiments"
    budget = BUDGETS["smoke"]
    only = ("balance", "networks")
    report = run_experiments(small_dataset, out, budget, only, progress=False)
    with open(out / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    assert len(results) == 2 * (2 + len(budget.nets)) * budget.seeds
    assert {r["seed"] for r in results} == {"0", "1"}
    text = report.read_text()
    assert "Table 4" in text and "Table 6" in text and "Table 7" in text and "±" in text
    assert "0.830" in text  # the paper's radius figure beside ours
    for name in ("fig9_convergence.png", "fig10_networks.png"):
        assert Image.open(out / name).size[0] > 300
    assert "<table>" in (out / "report.html").read_text()
    # resume: finished runs are kept, a missing one is redone
    conditions = plan(budget, only)
    finished = {(c.key, s): (run_folder(out, c, s) / "metrics.json").stat().st_mtime_ns
                for c in conditions for s in range(budget.seeds)}
    lost = run_folder(out, conditions[0], 1) / "metrics.json"
    lost.unlink()
    run_experiments(small_dataset, out, budget, only, progress=False)
    assert lost.is_file()
    for (key, seed), mtime in finished.items():
        if (key, seed) != (conditions[0].key, 1):
            assert (run_folder(out, next(c for c in conditions if c.key == key), seed) / "metrics.json"
                    ).stat().st_mtime_ns == mtime


def test_seeds_change_the_runs(small_dataset, tmp_path):
    budget = replace(BUDGETS["smoke"], nets=("net1",))
    run_experiments(small_dataset, tmp_path, budget, ("networks",), progress=False)
    condition = plan(budget, ("networks",))[0]
    curves = [(run_folder(tmp_path, condition, s) / "curves.csv").read_text() for s in range(budget.seeds)]
    assert curves[0] != curves[1]


def test_cli_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["experiments", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--budget", "smoke"]) == 1
    assert "not a drustage dataset" in capsys.readouterr().err
