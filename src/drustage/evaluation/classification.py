"""Classification metrics (scikit-learn, SciPy) and the plots people read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from drustage.io_utils import atomic_path, atomic_write_text
from drustage.stages import PHASES, ClassScheme


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy."""
    from scipy.stats import binomtest

    if total == 0:
        return (float("nan"), float("nan"))
    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class ClassMetrics:
    """One class's precision, recall, F1 and support."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationMetrics:
    """A classification's figures; ``ece`` when confidences were given, ``phase`` when the classes
    are stages (the same figures of the phases they imply)."""

    n: int
    accuracy: float
    accuracy_ci95: tuple[float, float]
    within_one_accuracy: float
    kappa: float
    kappa_quadratic: float
    per_class: dict[str, ClassMetrics]
    confusion_matrix: tuple[tuple[int, ...], ...]
    classes: tuple[str, ...]
    ece: float | None = None
    phase: ClassificationMetrics | None = None

    def summary(self) -> str:
        """One line: accuracy with its interval, within one, both kappas, n."""
        low, high = self.accuracy_ci95
        return (f"accuracy {self.accuracy:.3f} (95% CI {low:.3f}-{high:.3f}), within one "
                f"{self.within_one_accuracy:.3f}, kappa {self.kappa:.3f}, quadratic kappa "
                f"{self.kappa_quadratic:.3f}, n={self.n}")

    def to_dict(self) -> dict:
        """Plain JSON data; ``ece`` and ``phase`` only when present."""
        result = {"n": self.n, "accuracy": self.accuracy, "accuracy_ci95": list(self.accuracy_ci95),
                  "within_one_accuracy": self.within_one_accuracy, "kappa": self.kappa,
                  "kappa_quadratic": self.kappa_quadratic,
                  "per_class": {name: asdict(m) for name, m in self.per_class.items()},
                  "confusion_matrix": [list(row) for row in self.confusion_matrix], "classes": list(self.classes)}
        if self.ece is not None:
            result["ece"] = self.ece
        if self.phase is not None:
            result["phase"] = self.phase.to_dict()
        return result

    @classmethod
    def from_dict(cls, data: dict) -> ClassificationMetrics:
        """Read back ``to_dict``'s data (keys it does not write are ignored)."""
        return cls(n=int(data["n"]), accuracy=float(data["accuracy"]),
                   accuracy_ci95=tuple(float(v) for v in data["accuracy_ci95"]),
                   within_one_accuracy=float(data["within_one_accuracy"]), kappa=float(data["kappa"]),
                   kappa_quadratic=float(data["kappa_quadratic"]),
                   per_class={name: ClassMetrics(**m) for name, m in data["per_class"].items()},
                   confusion_matrix=tuple(tuple(int(v) for v in row) for row in data["confusion_matrix"]),
                   classes=tuple(data["classes"]), ece=data.get("ece"),
                   phase=cls.from_dict(data["phase"]) if data.get("phase") else None)


def classification_metrics(y_true, y_pred, class_names: Sequence[str], confidence=None) -> ClassificationMetrics:
    """Accuracy with 95% CI, per-class precision/recall/F1, confusion matrix, Cohen's kappa
    (unweighted and quadratic: classes are ordinal) and accuracy within one class; with the
    predictions' ``confidence``, their expected calibration error."""
    from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix,
                                 precision_recall_fscore_support)

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(class_names)))
    correct = int((y_true == y_pred).sum())
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    agree_all = len(np.unique(np.concatenate([y_true, y_pred]))) == 1
    return ClassificationMetrics(
        n=int(len(y_true)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        accuracy_ci95=accuracy_interval(correct, len(y_true)),
        within_one_accuracy=float(np.mean(np.abs(y_true - y_pred) <= 1)),
        kappa=1.0 if agree_all else float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        kappa_quadratic=1.0 if agree_all else float(cohen_kappa_score(y_true, y_pred, labels=labels,
                                                                      weights="quadratic")),
        per_class={name: ClassMetrics(float(p), float(r), float(f), int(n))
                   for name, p, r, f, n in zip(class_names, precision, recall, f1, support)},
        confusion_matrix=tuple(tuple(row) for row in confusion_matrix(y_true, y_pred, labels=labels).tolist()),
        classes=tuple(class_names),
        ece=None if confidence is None else expected_calibration_error(confidence, y_true == y_pred),
    )


def probability_metrics(labels: np.ndarray, probabilities: np.ndarray, scheme: ClassScheme) -> ClassificationMetrics:
    """The metrics of the top class and its calibration; for a stage scheme also the phase
    metrics, phases read as the most probable phase (class probabilities summed) as the predictor
    reads them."""
    predictions = probabilities.argmax(1)
    metrics = classification_metrics(labels, predictions, scheme.classes, probabilities.max(1))
    if scheme.name != "stage":
        return metrics
    to_phase = np.eye(len(PHASES))[list(scheme.phase_indices())]
    phase_probabilities = probabilities @ to_phase
    phase = classification_metrics(to_phase[labels].argmax(1), phase_probabilities.argmax(1), PHASES,
                                   phase_probabilities.max(1))
    return replace(metrics, phase=phase)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write atomically as PNG and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    pyplot().close(fig)
    return path


def plot_confusion(metrics: ClassificationMetrics, path: str | Path, title: str) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    names = metrics.classes
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1.0 + 0.65 * len(names)), dpi=110)
    ConfusionMatrixDisplay(np.array(metrics.confusion_matrix), display_labels=names).plot(
        ax=ax, colorbar=False, cmap="Blues", xticks_rotation=45)
    low, high = metrics.accuracy_ci95
    ax.set_title(f"{title}\naccuracy {metrics.accuracy:.1%} (95% CI {low:.1%}-{high:.1%}), n={metrics.n}",
                 fontsize=9)
    return save_figure(fig, path)


def write_learning_curves(history: list[dict], png: str | Path, csv: str | Path, title: str) -> None:
    """Loss and accuracy per epoch for training and validation, as PNG and CSV."""
    columns = list(history[0])
    lines = [",".join(columns)] + [",".join(f"{row[c]:.6g}" for c in columns) for row in history]
    atomic_write_text(csv, "\n".join(lines) + "\n")
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        left.plot(epochs, [row[key] for row in history], marker=".", label=label)
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
        right.plot(epochs, [row[key] for row in history], marker=".", label=label)
    left.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def expected_calibration_error(confidence, correct, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(gap)


def rank_correlation(scores, ages, minimum: int = 3) -> float | None:
    """Spearman correlation of maturity scores with age; None below ``minimum`` items or when
    every score is the same (the correlation is undefined)."""
    from scipy.stats import spearmanr

    scores = np.asarray(scores, dtype=float)
    if len(scores) < minimum or np.ptp(scores) == 0:
        return None
    return float(spearmanr(scores, np.asarray(ages, dtype=float)).statistic)


def reliability_table(confidence, correct, bins: int = 10) -> list[dict]:
    """Per confidence bin: count, mean confidence and accuracy (the reliability diagram's points)."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        if members.any():
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(members.sum()),
                         "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean())})
    return rows


def plot_reliability(curves: dict[str, list[dict]], path: str | Path, title: str) -> Path:
    """Reliability diagram: accuracy against confidence per bin, one line per named curve."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110)
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="calibrated")
    for name, rows in curves.items():
        if rows:
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
    ax.set(xlabel="confidence", ylabel="share right", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
