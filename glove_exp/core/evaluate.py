"""Test-set metrics, scikit-learn's classification report and the confusion matrix."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix


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
        accuracy=float(report["accuracy"]),  # the report's micro average over every class
        macro_f1=float(report["macro avg"]["f1-score"]),
        per_class_f1={name: float(report[name]["f1-score"]) for name in class_names},
        report_text=classification_report(labels, predictions, **kwargs),
        report=report,
        confusion=confusion_matrix(labels, predictions, labels=ids),
    )


def metric_names(class_names: list[str]) -> list[str]:
    """Class names as parts of MLflow metric names: letters, digits, ``_ - .`` only (``/`` would
    open a chart section), unique."""
    names: list[str] = []
    for name in class_names:
        safe = re.sub(r"[^0-9A-Za-z_\-.]+", "_", name).strip("_.") or "class"
        names.append(safe if safe not in names else f"{safe}_{len(names)}")
    return names
