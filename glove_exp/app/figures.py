"""The confusion matrix as a figure: row-normalised, each cell's value written in it for few classes, a
heatmap for many."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from glove_exp.core.evaluate import Evaluation

# Above this many classes the confusion matrix is a heatmap without per-cell values: 200 classes' 40,000
# values made a 180-inch figure that took 100 s to save.
ANNOTATED_CLASSES = 20
HEATMAP_INCHES = 14.0
TICK_LABELS = 40  # class names per axis of the heatmap, at most
TALLEST_TITLE = "ÉÅg_|([{"  # the height a one-line title may take: accents above, descenders below
# zlib's fastest level: 10 % larger files than its default's, a quarter of a confusion figure's saving time
PNG_SAVE = {"pil_kwargs": {"compress_level": 1}}


def confusion_figure(evaluation: Evaluation, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix with class names, as a matplotlib figure: each cell's value written
    in it up to :data:`ANNOTATED_CLASSES` classes; beyond, a heatmap of a bounded size with a colour bar
    and at most :data:`TICK_LABELS` class names per axis (``confusion_matrix.csv`` holds every count).
    Written values need no colour bar (which would take a third of the figure's drawing time)."""
    labels = [literal(name) for name in class_names]
    annotated = len(labels) <= ANNOTATED_CLASSES
    if annotated:
        size = 0.85 * max(4.0, 0.9 * len(labels) + 2.5)
        figure = Figure(figsize=(size, size))
        axes = figure.add_axes(annotated_layout(tuple(labels), size))
    else:
        figure = Figure(figsize=(HEATMAP_INCHES, HEATMAP_INCHES * 0.85), layout="constrained")  # a bar: wider
        axes = figure.add_subplot()
    plot_confusion(axes, evaluation.confusion_normalised, labels)
    if not annotated:
        shown = range(0, len(labels), math.ceil(len(labels) / TICK_LABELS))
        axes.set_xticks(shown, [labels[i] for i in shown], rotation=90)
        axes.set_yticks(shown, [labels[i] for i in shown])
    axes.set_title(literal(title or f"accuracy {evaluation.accuracy:.1%}"))
    return figure


def literal(text: str) -> str:
    return text.replace("$", r"\$")  # a "$" would start matplotlib's mathtext


def plot_confusion(axes: Axes, matrix: np.ndarray, labels: list[str]) -> None:
    """``[C, C]`` values in [0, 1] as scikit-learn's ``ConfusionMatrixDisplay`` draws them (whose import
    took 0.9 s of each run), on a fixed colour scale: written in the cells, in the colour scale's far end,
    up to :data:`ANNOTATED_CLASSES` classes; beyond, a colour bar."""
    classes, annotated = len(labels), len(labels) <= ANNOTATED_CLASSES
    image = axes.imshow(matrix, interpolation="nearest", cmap="Blues", vmin=0.0, vmax=1.0)
    if annotated:
        dark, light = image.cmap(1.0), image.cmap(0.0)
        for (row, column), value in np.ndenumerate(matrix):
            color = dark if value < 0.5 else light
            axes.text(column, row, format(value, ".2f"), ha="center", va="center", color=color)
    else:
        axes.figure.colorbar(image, ax=axes)
    ticks = np.arange(classes)
    axes.set(xticks=ticks, yticks=ticks, xlabel="Predicted label", ylabel="True label", ylim=(classes - 0.5, -0.5))
    axes.set_xticklabels(labels, rotation=35 if annotated else 90)
    axes.set_yticklabels(labels)


@functools.lru_cache(maxsize=16)
def annotated_layout(labels: tuple[str, ...], size: float) -> tuple[float, float, float, float]:
    """Where constrained layout puts the axes of an annotated confusion figure with these class names,
    worked out once per names (laying a figure out took 40 % of drawing it). The values in the cells do
    not move it; a one-line title only by its height, reserved here for the tallest and deepest glyphs."""
    figure = Figure(figsize=(size, size), layout="constrained")
    axes = figure.add_subplot()
    plot_confusion(axes, np.eye(len(labels)), list(labels))
    axes.set_title(TALLEST_TITLE)
    figure.draw_without_rendering()
    return axes.get_position().bounds
