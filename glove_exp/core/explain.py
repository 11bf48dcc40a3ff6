"""LIME (Ribeiro et al., 2016) for text: lime 0.2's ``LimeTextExplainer`` maths with bag-of-words
features (tested against it), where the features are the tokens the model reads (so ``Tax`` and
``tax`` are one word) and every perturbation of a document is scored in one batched call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from glove_exp.core.text import PAD

KERNEL_WIDTH = 25.0  # lime's default for text
# [S, W] 0/1 masks over a document's distinct tokens -> [S, C] class probabilities
PredictMasks = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Explanation:
    """``weights``: the predicted class's and the runner-up's ``(word, weight)`` pairs, largest ``|weight|``
    first; a positive weight pushes the document towards that class."""

    index: int
    text: str
    true_class: str
    predicted_class: str
    runner_up: str
    probabilities: dict[str, float]
    weights: dict[str, tuple[tuple[str, float], ...]]

    def data(self) -> dict[str, Any]:
        """JSON-ready values."""
        fields = dataclasses.asdict(self)
        fields["weights"] = {name: [list(pair) for pair in pairs] for name, pairs in self.weights.items()}
        return fields


def choose_examples(num_examples: int, num_docs: int, seed: int) -> list[int]:
    """``min(num_examples, num_docs)`` distinct sorted indices in ``[0, num_docs)``, the same for a seed."""
    if num_examples < 0 or num_docs < 0:
        raise ValueError(f"num_examples ({num_examples}) and num_docs ({num_docs}) must be >= 0")
    chosen = np.random.default_rng(seed).choice(num_docs, size=min(num_examples, num_docs), replace=False)
    return sorted(int(i) for i in chosen)


def perturbations(num_words: int, num_samples: int, rng: np.random.RandomState) -> np.ndarray:
    """``[S, W]`` 0/1 masks: row 0 keeps every word, row ``i > 0`` drops ``k ~ U{1..W}`` distinct words."""
    masks = np.ones((num_samples, num_words))
    sizes = rng.randint(1, num_words + 1, num_samples - 1)
    # lime's rng.choice(num_words, size, replace=False) is rng.permutation(num_words)[:size] (the legacy
    # RandomState stream, which NumPy keeps), without choice's checks; the zeros are set in one assignment
    dropped = [rng.permutation(num_words)[:size] for size in sizes]
    masks[np.repeat(np.arange(1, num_samples), sizes), np.concatenate([np.zeros(0, np.int64), *dropped])] = 0
    return masks


def kernel_weights(masks: np.ndarray) -> np.ndarray:
    """``[S]`` sample weights: ``sqrt(exp(-d^2 / width^2))`` of the cosine distance (x 100) to row 0."""
    norms = np.linalg.norm(masks, axis=1) * np.linalg.norm(masks[0])
    distances = (1.0 - masks @ masks[0] / np.where(norms > 0, norms, 1.0)) * 100
    return np.sqrt(np.exp(-(distances**2) / KERNEL_WIDTH**2))


class WeightedFit:
    """lime's weighted ridge regressions (scikit-learn's ``Ridge(alpha).fit(x, y, sample_weight)`` with an
    intercept: centre by the weighted means, scale rows by the square roots of the weights, solve the normal
    equations) on column subsets of one document's ``[S, W]`` masks. The ``[W, W]`` Gram matrix is made once,
    so each fit, and each candidate of the forward selection, is a solve of at most ``W`` equations."""

    def __init__(self, masks: np.ndarray, weights: np.ndarray):
        self.weights, self.root = weights / weights.sum(), np.sqrt(weights)
        self.centred = (masks - self.weights @ masks) * self.root[:, None]
        self.gram = self.centred.T @ self.centred

    def target(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """``y`` ``[S]`` as the fits read it: the masks' products with it, and its weighted sum of squares."""
        centred = (y - self.weights @ y) * self.root
        return self.centred.T @ centred, float(centred @ centred)

    def coefficients(self, features: list[int], alpha: float, products: np.ndarray) -> np.ndarray:
        """The fit's coefficients of ``features``; without a penalty, the least-norm ones of a singular
        system (scikit-learn's fallback from Cholesky to SVD)."""
        gram = self.gram[np.ix_(features, features)] + alpha * np.eye(len(features))
        try:
            return np.linalg.solve(gram, products[features])
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(gram, products[features], rcond=None)[0]

    def r2(self, features: list[int], products: np.ndarray, squares: float) -> float:
        """The weighted R^2 of the unpenalised fit of ``features``: explained over total sum of squares
        (1.0 for a constant target, as scikit-learn's score gives)."""
        if squares == 0:
            return 1.0
        return float(products[features] @ self.coefficients(features, 0.0, products)) / squares


def select_features(fit: WeightedFit, target: np.ndarray, count: int) -> list[int]:
    """lime's ``auto`` selection: forward selection by weighted R^2 for up to 6 features, else the
    largest ``|coefficient|`` of a lightly regularised fit."""
    products, squares = fit.target(target)
    every = list(range(fit.gram.shape[0]))
    if count <= 6:
        chosen: list[int] = []
        for _ in range(min(count, len(every))):
            rest = [f for f in every if f not in chosen]
            chosen.append(max(rest, key=lambda f: fit.r2([*chosen, f], products, squares)))
        return chosen
    coefficients = fit.coefficients(every, 0.01, products)  # times masks[0], all ones: the document's words
    return sorted(every, key=lambda f: -abs(coefficients[f]))[:count]


def word_weights(fit: WeightedFit, target: np.ndarray, count: int) -> list[tuple[int, float]]:
    """``(feature, weight)`` of the ``count`` selected features for one class's ``[S]`` probabilities."""
    chosen = select_features(fit, target, count)
    coefficients = fit.coefficients(chosen, 1.0, fit.target(target)[0])
    return sorted(zip(chosen, (float(c) for c in coefficients)), key=lambda pair: -abs(pair[1]))


def explain(
    words: Sequence[str],
    predict: PredictMasks,
    class_names: Sequence[str],
    *,
    num_features: int,
    num_samples: int,
    seed: int,
) -> tuple[np.ndarray, dict[int, list[tuple[str, float]]]]:
    """A document's ``[C]`` probabilities and, for the predicted class and the runner-up, the ``(word,
    weight)`` pairs of its ``W`` distinct tokens ``words``; ``predict`` scores all ``[S, W]`` masks at once."""
    rng = np.random.RandomState(seed % 2**32)
    masks = perturbations(len(words), num_samples, rng) if words else np.ones((1, 0))
    probabilities = np.asarray(predict(masks), dtype=np.float64)
    if probabilities.shape != (len(masks), len(class_names)):
        raise ValueError(
            f"predict gave {probabilities.shape} scores for {len(masks)} texts of {len(class_names)} classes"
        )
    top = [int(k) for k in np.argsort(-probabilities[0], kind="stable")[:2]]
    fit = WeightedFit(masks, kernel_weights(masks)) if words else None
    explained = {
        k: [(words[f], w) for f, w in word_weights(fit, probabilities[:, k], num_features)] if fit else [] for k in top
    }
    return probabilities[0], explained


def masked_ids(ids: np.ndarray, codes: np.ndarray, masks: np.ndarray, max_tokens: int) -> np.ndarray:
    """``[S, max_tokens]`` token ids of each perturbed document: the tokens ``ids`` ``[L]`` whose word
    (``codes`` ``[L]``, an index into the masks' ``W`` columns) the mask keeps, in order, post-padded
    and post-truncated as the model reads text."""
    keep = masks[:, codes] > 0  # [S, L]
    order = np.argsort(~keep, axis=1, kind="stable")  # kept positions first, in document order
    kept = np.where(np.take_along_axis(keep, order, axis=1), ids[order], PAD)[:, :max_tokens]
    return np.pad(kept, ((0, 0), (0, max_tokens - kept.shape[1])))
