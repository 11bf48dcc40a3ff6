"""Figures a run logs: the row-normalised confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from glove_exp.core.evaluate import Evaluation


def confusion_figure(evaluation: Evaluation, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix with class names, as a matplotlib figure."""
    literal = lambda text: text.replace("$", r"\$")  # noqa: E731 (a "$" would start matplotlib's mathtext)
    size = max(4.0, 0.9 * len(class_names) + 2.5)
    figure = Figure(figsize=(size, size * 0.85), layout="constrained")
    display = ConfusionMatrixDisplay(evaluation.confusion_normalised, display_labels=[literal(n) for n in class_names])
    display.plot(ax=figure.add_subplot(), cmap="Blues", values_format=".2f", xticks_rotation=35, colorbar=True)
    display.im_.set_clim(0.0, 1.0)
    display.ax_.set_title(literal(title or f"accuracy {evaluation.accuracy:.1%}"))
    return figure
