"""The paper's classifier experiments as one resumable command, repeated over seeds.

Experiments (the paper's numbering): balanced against imbalanced training with the base network
(table 4, convergence in figure 9); with against without x5 augmentation (table 5); the nine
networks for both bones (table 6, figure 10); Adam against SGD over learning rates (figure 11)
and dropout against none (figure 12); the best configuration per bone (table 7); and the fine
``stage`` scheme the paper left as future work. Every run uses drustage's per-crop standardised
input except the "input" experiment's raw-crop row, which measures what it changes.

Every run of a budget sees the same number of training samples (``epochs`` x
``epoch_samples``), so conditions are compared at equal compute. A condition shared by several
experiments runs once. Each (condition, seed) run lives in its own folder and is finished when
its ``metrics.json`` exists, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from drustage.evaluation.classification import ClassificationMetrics
from drustage.io_utils import atomic_path, atomic_write_text
from drustage.models.spec import PRESETS
from drustage.stages import BONES
from drustage.training.config import ClassifierConfig

BASE_NET = "net3"  # the paper's basic network: 32c7-64c5-64c3-32c3 + 4096-1024
BEST_NET = {"radius": "net7", "ulna": "net8"}  # the paper's choices for the optimiser study
NETS = tuple(PRESETS)  # net1 ... net9, in the paper's order

# The paper's sets (section 4.1): radius R5-R11 as 4 phases, 25 test per class; ulna 3 phases, 50.
PAPER_SETS = {
    "radius": dict(scheme="phase4", min_stage="R5", test_per_class=25,
                   per_class_cap={"pre-peak": 75, "peak": 75, "deceleration": 175, "mature": 75}),
    "ulna": dict(scheme="phase3", test_per_class=50, per_class_cap={"peak": 200, "deceleration": 250, "mature": 150}),
}
# Accuracies printed in the paper's text and tables (figures 9-12 give curves only).
PAPER = {
    ("balance", "ulna", "imbalanced"): 0.687, ("balance", "ulna", "balanced"): 0.707,
    ("balance", "radius", "imbalanced"): 0.83, ("balance", "radius", "balanced"): 0.84,
    ("augmentation", "ulna", "original"): 0.687, ("augmentation", "ulna", "balanced x5"): 0.787,
    ("augmentation", "radius", "original"): 0.83, ("augmentation", "radius", "balanced x5"): 0.88,
    ("networks", "ulna", "net8"): 0.88, ("networks", "radius", "net7"): 0.92,
    ("best", "ulna", "best"): 0.90, ("best", "radius", "best"): 0.92,
}
PAPER_BEST = {"ulna": "net8, Adam 1e-3, dropout", "radius": "net7, Adam 1e-4, dropout"}
EXPERIMENTS = ("balance", "augmentation", "networks", "optimizer", "dropout", "input", "stage")


@dataclass(frozen=True)
class Budget:
    """How much compute a set of experiments may use."""

    name: str
    seeds: int
    epochs: int
    epoch_samples: int  # training samples per epoch, the same for every condition
    learning_rates: tuple[float, ...]
    nets: tuple[str, ...] = NETS
    paper_sets: bool = True  # the paper's class sets and test counts (needs the `paper` preset)
    note: str = ""


BUDGETS = {
    "smoke": Budget("smoke", seeds=2, epochs=2, epoch_samples=32, learning_rates=(1e-3,), nets=("net1", "net7"),
                    paper_sets=False, note="plumbing check on any small dataset; numbers mean nothing"),
    "cpu": Budget("cpu", seeds=2, epochs=5, epoch_samples=1000, learning_rates=(1e-3, 1e-4),
                  note="under an hour on 2 CPU cores: 5,000 training samples per run"),
    "full": Budget("full", seeds=3, epochs=20, epoch_samples=3000, learning_rates=(1e-2, 1e-3, 1e-4, 1e-5),
                   note="the paper's length (20 epochs of the x5 augmented set); meant for a GPU"),
}


@dataclass(frozen=True)
class Condition:
    """One training configuration and the (experiment, label) rows it answers."""

    config: ClassifierConfig
    rows: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> str:
        settings = json.dumps(replace(self.config, seed=0).to_dict(), sort_keys=True)
        return f"{self.config.bone}-{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


def plan(budget: Budget, only: tuple[str, ...] = EXPERIMENTS) -> list[Condition]:
    """Every condition the chosen experiments need, shared conditions merged."""
    conditions: dict[str, Condition] = {}

    def add(experiment: str, label: str, bone: str, **settings) -> None:
        if experiment not in only:
            return
        sets = PAPER_SETS[bone] if budget.paper_sets and settings.get("scheme", "") != "stage" else {}
        base = dict(bone=bone, scheme="phase4" if bone == "radius" else "phase3", net=BASE_NET, optimizer="adam",
                    lr=1e-4, dropout=0.5, balance=True, augment=5, epochs=budget.epochs,
                    epoch_samples=budget.epoch_samples, test_fraction=0.25)
        config = ClassifierConfig(**{**base, **sets, **settings})
        condition = Condition(config, ((experiment, label),))
        if condition.key in conditions:
            known = conditions[condition.key]
            condition = replace(known, rows=known.rows + condition.rows)
        conditions[condition.key] = condition

    for bone in BONES:
        add("balance", "imbalanced", bone, balance=False, augment=1)
        add("balance", "balanced", bone, balance=True, augment=1)
        add("augmentation", "original", bone, balance=False, augment=1)
        add("augmentation", "balanced x5", bone)
        for net in budget.nets:
            add("networks", net, bone, net=net)
        for optimizer in ("adam", "sgd"):
            for lr in budget.learning_rates:
                add("optimizer", f"{optimizer} {lr:g}", bone, net=BEST_NET[bone], optimizer=optimizer, lr=lr)
        for dropout in (0.0, 0.5):
            add("dropout", "dropout" if dropout else "no dropout", bone, net=BEST_NET[bone], dropout=dropout)
        for standardize in (False, True):
            add("input", "standardised crops" if standardize else "raw crops (paper)", bone, net=BEST_NET[bone],
                standardize=standardize)
        add("stage", "stage", bone, scheme="stage", net="net7", test_fraction=0.2)
    return list(conditions.values())


def run_folder(out: Path, condition: Condition, seed: int) -> Path:
    return out / "runs" / f"{condition.key}-seed{seed}"


def run_experiments(dataset_root: str | Path, out: str | Path, budget: Budget,
                    only: tuple[str, ...] = EXPERIMENTS, workers: int = 1, progress: bool = True) -> Path:
    """Run (or resume) every condition over the budget's seeds; write results.csv and the report."""
    from tqdm import tqdm

    from drustage.data.crops import extract_context_crops
    from drustage.data.layout import read_dataset
    from drustage.training.classifier import train_classifier

    out = Path(out)
    dataset = read_dataset(dataset_root)
    conditions = plan(budget, only)
    jobs = [(c, seed) for c in conditions for seed in range(budget.seeds)]
    pending = [(c, seed) for c, seed in jobs if not (run_folder(out, c, seed) / "metrics.json").is_file()]
    if pending:
        extract_context_crops(dataset, workers=workers, progress=progress)  # once, cached for every run
    atomic_write_text(out / "plan.json", json.dumps({"budget": asdict(budget), "dataset": str(dataset.root),
                                                     "conditions": [{"key": c.key, "rows": c.rows,
                                                                     "config": c.config.to_dict()}
                                                                    for c in conditions]}, indent=2) + "\n")
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="experiments", unit="run",
               disable=not progress)
    for condition, seed in pending:
        bar.set_postfix_str(f"{condition.config.bone} {condition.rows[0][0]}: {condition.rows[0][1]}")
        train_classifier(dataset, replace(condition.config, seed=seed), run_folder(out, condition, seed),
                         workers=workers, progress=False, checkpoint=False)
        bar.update()
    bar.close()
    results = collect_results(out, conditions, budget.seeds)
    write_results_csv(results, out / "results.csv")
    return write_report(results, out, budget)


@dataclass(frozen=True)
class RunResult:
    """One seed's run of a condition, as one (experiment, label) row of the report."""

    experiment: str
    label: str
    seed: int
    condition: str  # the condition's key
    config: ClassifierConfig
    test: ClassificationMetrics
    best_epoch: int
    history: tuple[dict[str, float], ...]  # the learning curve, one row per epoch

    def csv_row(self) -> dict:
        config = self.config
        return {"experiment": self.experiment, "label": self.label, "bone": config.bone, "seed": self.seed,
                "condition": self.condition, "net": config.net, "scheme": config.scheme,
                "optimizer": config.optimizer, "lr": config.lr, "dropout": config.dropout,
                "balance": config.balance, "augment": config.augment, "n_test": self.test.n,
                "accuracy": self.test.accuracy, "kappa": self.test.kappa,
                "within_one": self.test.within_one_accuracy, "best_epoch": self.best_epoch}


def collect_results(out: Path, conditions: list[Condition], seeds: int) -> list[RunResult]:
    """One result per (experiment, label, bone, seed) with the test metrics and the learning curve."""
    from drustage.training.classifier import ClassifierTrainResult

    rows = []
    for condition in conditions:
        for seed in range(seeds):
            folder = run_folder(out, condition, seed)
            result = ClassifierTrainResult.read(folder)
            with open(folder / "curves.csv", newline="") as handle:
                history = tuple({k: float(v) for k, v in row.items()} for row in csv.DictReader(handle))
            rows += [RunResult(experiment, label, seed, condition.key, condition.config, result.test,
                               result.best_epoch, history) for experiment, label in condition.rows]
    return rows


def write_results_csv(results: list[RunResult], path: Path) -> None:
    rows = [r.csv_row() for r in results]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


@dataclass(frozen=True)
class ConditionSummary:
    """A condition's test accuracy over seeds, and the seeds' learning curves."""

    mean: float
    sd: float
    n_seeds: int
    n_test: int
    config: ClassifierConfig
    histories: tuple[tuple[dict[str, float], ...], ...]


def summarise(results: list[RunResult]) -> dict[tuple[str, str, str], ConditionSummary]:
    """(experiment, bone, label) -> the condition's accuracy over seeds."""
    groups: dict[tuple[str, str, str], list[RunResult]] = {}
    for row in results:
        groups.setdefault((row.experiment, row.config.bone, row.label), []).append(row)
    summary = {}
    for key, rows in groups.items():
        accuracies = [r.test.accuracy for r in rows]
        summary[key] = ConditionSummary(statistics.fmean(accuracies),
                                        statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                                        len(rows), rows[0].test.n, rows[0].config, tuple(r.history for r in rows))
    return summary


def best_per_bone(summary: dict[tuple[str, str, str], ConditionSummary]
                  ) -> dict[str, tuple[str, str, ConditionSummary]]:
    """Table 7: the highest mean accuracy per bone among the network, optimiser and dropout runs."""
    best = {}
    for (experiment, bone, label), stats in summary.items():
        if experiment not in ("networks", "optimizer", "dropout"):
            continue
        if bone not in best or stats.mean > best[bone][2].mean:
            best[bone] = (experiment, label, stats)
    return best


def _describe(config: ClassifierConfig) -> str:
    dropout = "dropout" if config.dropout else "no dropout"
    return f"{config.net}, {config.optimizer.capitalize()} {config.lr:g}, {dropout}"


def _cell(stats: ConditionSummary) -> str:
    return f"{stats.mean:.3f} ± {stats.sd:.3f}"


def report_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report."""
    tables = []
    specs = [("balance", "Table 4 — base network (net3), imbalanced vs balanced, no augmentation"),
             ("augmentation", "Table 5 — base network, original vs balanced ×5 augmented"),
             ("networks", "Table 6 / figure 10 — the nine networks, balanced ×5, Adam 1e-4, dropout 0.5"),
             ("optimizer", "Figure 11 — optimiser and learning rate (radius net7, ulna net8)"),
             ("dropout", "Figure 12 — dropout against none (radius net7, ulna net8, Adam 1e-4)"),
             ("input", "Not in the paper — raw crops (the paper) against per-crop standardised input"),
             ("stage", "Fine `stage` scheme (11 radius / 9 ulna classes, net7), future work in the paper")]
    for experiment, title in specs:
        labels = list(dict.fromkeys(label for (e, _, label) in summary if e == experiment))
        if not labels:
            continue
        rows = []
        for label in labels:
            row = [label]
            for bone in BONES:
                stats = summary.get((experiment, bone, label))
                paper = PAPER.get((experiment, bone, label))
                row += [_cell(stats) if stats else "–", f"{paper:.3f}" if paper is not None else "–"]
            rows.append(row)
        tables.append((title, ["condition", "radius (phantoms)", "radius (paper)", "ulna (phantoms)", "ulna (paper)"],
                       rows))
    best = best_per_bone(summary)
    if best:
        rows = [[bone, _describe(stats.config), _cell(stats), PAPER_BEST[bone],
                 f"{PAPER[('best', bone, 'best')]:.3f}"] for bone, (_, _, stats) in sorted(best.items())]
        tables.append(("Table 7 — best configuration per bone", ["bone", "best here", "accuracy", "paper's best",
                                                                 "paper"], rows))
    return tables


def _mean_curve(histories: tuple[tuple[dict[str, float], ...], ...], key: str) -> tuple[list[float], list[float]]:
    length = min(len(h) for h in histories)
    epochs = [histories[0][i]["epoch"] for i in range(length)]
    return epochs, [statistics.fmean(h[i][key] for h in histories) for i in range(length)]


def plot_figures(summary: dict, out: Path) -> dict[str, Path]:
    """Figures 9-12 on the phantom runs (means over seeds; error bars are one sd)."""
    from drustage.evaluation.classification import pyplot

    plt = pyplot()
    figures: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        figures[name] = out / name

    def curves(experiment: str, labels: list[str], key: str, ylabel: str, name: str, title: str) -> None:
        if not any((experiment, bone, label) in summary for bone in BONES for label in labels):
            return
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
        for axis, bone in zip(axes, BONES):
            for label in labels:
                stats = summary.get((experiment, bone, label))
                if stats:
                    axis.plot(*_mean_curve(stats.histories, key), marker=".", label=label)
            axis.set(title=bone, xlabel="epoch", ylabel=ylabel)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        save(fig, name)

    curves("balance", ["imbalanced", "balanced"], "val_accuracy", "validation accuracy", "fig9_convergence.png",
           "Figure 9: convergence, imbalanced vs balanced (mean over seeds)")
    networks = {key: stats for key, stats in summary.items() if key[0] == "networks"}
    nets = [net for net in NETS if any(stats.config.net == net for stats in networks.values())]
    if nets:
        fig, axis = plt.subplots(figsize=(7, 3.4), dpi=110)
        for bone in BONES:
            points = sorted(((nets.index(stats.config.net), stats) for (_, b, _), stats in networks.items()
                             if b == bone), key=lambda point: point[0])
            axis.errorbar([x for x, _ in points], [p.mean for _, p in points], yerr=[p.sd for _, p in points],
                          marker="o", capsize=3, label=bone)
        axis.set(xlabel="network", ylabel="test accuracy", title="Figure 10: accuracy by network (mean ± sd)")
        axis.set_xticks(range(len(nets)), nets)
        axis.grid(alpha=0.3)
        axis.legend()
        save(fig, "fig10_networks.png")
    optimisers = {key: stats for key, stats in summary.items() if key[0] == "optimizer"}
    if optimisers:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
        for axis, bone in zip(axes, BONES):
            for optimizer in ("adam", "sgd"):
                points = sorted(((stats.config.lr, stats) for (_, b, _), stats in optimisers.items()
                                 if b == bone and stats.config.optimizer == optimizer), key=lambda point: point[0])
                if points:
                    axis.errorbar([lr for lr, _ in points], [p.mean for _, p in points],
                                  yerr=[p.sd for _, p in points], marker="o", capsize=3, label=optimizer)
            axis.set(xscale="log", title=f"{bone} ({BEST_NET[bone]})", xlabel="learning rate", ylabel="test accuracy")
            axis.grid(alpha=0.3)
            axis.legend()
        fig.suptitle("Figure 11: optimiser and learning rate (mean ± sd)", fontsize=10)
        save(fig, "fig11_optimizers.png")
    curves("dropout", ["dropout", "no dropout"], "val_loss", "validation loss", "fig12a_dropout_loss.png",
           "Figure 12a: validation loss with and without dropout")
    lr = 1e-4
    at_lr = list(dict.fromkeys(label for (_, _, label), stats in optimisers.items() if stats.config.lr == lr))
    curves("optimizer", at_lr, "val_accuracy", "validation accuracy", "fig12b_optimizer_accuracy.png",
           f"Figure 12b: Adam vs SGD at lr {lr:g}")
    return figures


def write_report(results: list[RunResult], out: Path, budget: Budget) -> Path:
    """report.md and report.html: every table beside the paper's numbers, and the figures."""
    import html

    summary = summarise(results)
    tables = report_tables(summary)
    figures = plot_figures(summary, out)
    rates = ", ".join(f"{lr:g}" for lr in budget.learning_rates)
    intro = (f"Budget `{budget.name}` ({budget.note}): {budget.seeds} seeds, {budget.epochs} epochs × "
             f"{budget.epoch_samples} samples per run, learning rates {rates}. "
             "Accuracy on the held-out test split, mean ± sd over seeds; the paper reports single runs on "
             "real radiographs. Raw results: `results.csv`.")
    md = ["# drustage experiments: the paper's tables on phantoms", "", intro, ""]
    for title, header, rows in tables:
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(row) + " |" for row in rows]
        md.append("")
    md += ["## Figures", ""] + [f"![{name}]({name})" for name in figures]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    parts = ["<!doctype html><meta charset='utf-8'><title>drustage experiments</title>",
             "<style>body{font:15px system-ui;max-width:1000px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
             "img{max-width:100%}</style>",
             "<h1>drustage experiments: the paper's tables on phantoms</h1>", f"<p>{html.escape(intro)}</p>"]
    for title, header, rows in tables:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>")
    parts += ["<h2>Figures</h2>"] + [f"<p><img src='{name}' alt='{name}'></p>" for name in figures]
    atomic_write_text(out / "report.html", "\n".join(parts) + "\n")
    return out / "report.md"
