"""Test-set evaluation: accuracy, macro-F1, scikit-learn's classification report and the confusion
matrix (counts, row-normalised, and a heat-map plot)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    report_text: str
    report: dict[str, Any]  # classification_report(output_dict=True)
    confusion: np.ndarray  # [C, C] int64 counts, rows true class, columns predicted

    @property
    def confusion_normalised(self) -> np.ndarray:
        """``[C, C]`` rows summing to 1 (0 for a class absent from the labels)."""
        totals = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, totals, out=np.zeros(self.confusion.shape), where=totals > 0)


def evaluate(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> Evaluation:
    """Metrics of ``[N]`` predicted class ids against ``[N]`` true ones."""
    ids = list(range(len(class_names)))
    kwargs = dict(labels=ids, target_names=list(class_names), digits=4, zero_division=0)
    report = classification_report(labels, predictions, output_dict=True, **kwargs)
    return Evaluation(
        accuracy=float(accuracy_score(labels, predictions)),
        macro_f1=float(f1_score(labels, predictions, labels=ids, average="macro", zero_division=0)),
        per_class_f1={name: float(report[name]["f1-score"]) for name in class_names},
        report_text=classification_report(labels, predictions, **kwargs),
        report=report,
        confusion=confusion_matrix(labels, predictions, labels=ids),
    )


def write_confusion_csv(evaluation: Evaluation, class_names: Sequence[str], path: Path) -> Path:
    """Counts with a header row and a first column of class names."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, evaluation.confusion):
            writer.writerow([name, *(int(v) for v in row)])
    return path


def plot_confusion(evaluation: Evaluation, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised heat map with class names and per-cell share and count, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share, counts = evaluation.confusion_normalised, evaluation.confusion
    size = max(4.0, 0.9 * len(class_names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set(
        xticks=range(len(class_names)), yticks=range(len(class_names)),
        xticklabels=class_names, yticklabels=class_names,
        xlabel="predicted", ylabel="true", title=title or f"accuracy {evaluation.accuracy:.1%}",
    )  # fmt: skip
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right")
    for (i, j), value in np.ndenumerate(share):
        colour = "white" if value > 0.5 else "black"
        ax.text(j, i, f"{value:.2f}\n({counts[i, j]})", ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
