"""Test-set metrics: the classification report (scikit-learn's, made from the confusion matrix) and the
confusion matrix."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HEADERS = ("precision", "recall", "f1-score", "support")
SUMMARY_ROWS = ("accuracy", "macro avg", "weighted avg")  # the report's keys after the classes'
DIGITS = 4


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    report_text: str
    report: dict[str, Any]  # as scikit-learn's classification_report(output_dict=True)
    confusion: np.ndarray  # [C, C] int64 counts, rows true class, columns predicted

    @property
    def confusion_normalised(self) -> np.ndarray:
        """``[C, C]`` rows summing to 1 (0 for a class absent from the labels)."""
        totals = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, totals, out=np.zeros(self.confusion.shape), where=totals > 0)


def evaluate(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> Evaluation:
    """Metrics of ``[N]`` predicted class ids against ``[N]`` true ones, all in ``range(len(class_names))``."""
    confusion = confusion_matrix(labels, predictions, len(class_names))
    report = classification_report(confusion, class_names)
    return Evaluation(
        accuracy=report["accuracy"],
        macro_f1=report["macro avg"]["f1-score"],
        per_class_f1={name: report[name]["f1-score"] for name in class_names},
        report_text=report_text(report, class_names),
        report=report,
        confusion=confusion,
    )


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """``[C, C]`` int64 counts of ``[N]`` class ids: rows true class, columns predicted."""
    pairs = np.asarray(labels, np.int64) * classes + np.asarray(predictions, np.int64)
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def classification_report(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """What scikit-learn's ``classification_report(..., labels=range(C), target_names=class_names,
    zero_division=0, output_dict=True)`` gives, from the ``[C, C]`` confusion matrix by its formulas
    (tests/test_evaluate.py holds it to scikit-learn's): importing scikit-learn took 0.9 s of each run."""
    correct, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    precision, recall = divide(correct, predicted), divide(correct, support)
    f1 = divide(2.0 * correct, support + predicted.astype(np.float64))
    scores = np.stack([precision, recall, f1])
    report: dict[str, Any] = {name: row_dict(*scores[:, i], support[i]) for i, name in enumerate(class_names)}
    total = support.sum()
    report["accuracy"] = float(correct.sum() / predicted.sum())
    report["macro avg"] = row_dict(*np.average(scores, axis=1), total)
    report["weighted avg"] = row_dict(*np.average(scores, axis=1, weights=support), total)
    return report


def divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator != 0)


def row_dict(precision: float, recall: float, f1: float, support: float) -> dict[str, float]:
    return dict(zip(HEADERS, map(float, (precision, recall, f1, support))))


def report_text(report: dict[str, Any], class_names: Sequence[str]) -> str:
    """``report`` as scikit-learn's text ``classification_report`` (``digits=4``) lays it out."""
    width = max(*map(len, class_names), *map(len, SUMMARY_ROWS), DIGITS)
    row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    text = ("{:>{width}s} " + " {:>9}" * len(HEADERS)).format("", *HEADERS, width=width) + "\n\n"
    for name in class_names:
        *scores, support = report[name].values()
        text += row.format(name, *scores, int(support), width=width, digits=DIGITS)
    total = int(report["macro avg"]["support"])
    accuracy = "{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f} {:>9}\n"
    text += "\n" + accuracy.format("accuracy", "", "", report["accuracy"], total, width=width, digits=DIGITS)
    for average in SUMMARY_ROWS[1:]:
        *scores, _ = report[average].values()
        text += row.format(average, *scores, total, width=width, digits=DIGITS)
    return text


def metric_names(class_names: list[str]) -> list[str]:
    """Class names as parts of MLflow metric names: letters, digits, ``_ - .`` only (``/`` would
    open a chart section), unique."""
    names: list[str] = []
    for name in class_names:
        safe = re.sub(r"[^0-9A-Za-z_\-.]+", "_", name).strip("_.") or "class"
        names.append(safe if safe not in names else f"{safe}_{len(names)}")
    return names
