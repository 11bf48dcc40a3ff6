"""LIME explanations of single test documents: the data, and one small self-contained HTML page each.

LIME (``LimeTextExplainer.explain_instance``) computes the word weights of the predicted class and
of the runner-up; the page is rendered here, without JavaScript: the document with its words
highlighted by weight for each of the two classes, every class's probability, and the weights as
tables. Everything that comes from the data (text, words, class names) goes through
``html.escape``, and a Content-Security-Policy forbids scripts even if markup slipped through.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lime.lime_text import LimeTextExplainer
from tqdm import tqdm

from glove_exp.io.files import atomic_write

WORD_SPLIT = r"\W+"  # how LIME cuts a document into the words it removes (its default), and how the page finds them
MAX_SHOWN_CHARS = 5000  # of a document on its page (AG News documents have about 250); keeps pages small
MAX_SHOWN_WORD = 60  # characters of a word in the weight tables
LEVELS = 4  # colour intensities per sign
PALE_BELOW = 0.01  # weights are in probability units: when all are tinier than this, none is coloured strongly

_CSS = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}"
    ".doc{white-space:pre-wrap;border-left:3px solid #ccc;padding:.5em 1em;background:#fafafa}"
    "table{border-collapse:collapse}td,th{padding:.15em .6em;text-align:left}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".bar{width:20em;background:#eee}.bar span{display:block;height:.9em;background:#4a7bd0}"
    ".doc span{border-radius:3px;padding:0 1px}"
    + "".join(
        f".g{level}{{background:rgba(0,160,0,{level / LEVELS:.2f})}}.r{level}{{background:rgba(220,0,0,{level / LEVELS:.2f})}}"
        for level in range(1, LEVELS + 1)
    )
)
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class Explanation:
    """LIME's explanation of one test document, and the path of its page.

    ``probabilities`` maps every class name to the model's probability (in class order);
    ``weights`` maps the predicted class and the runner-up to LIME's ``(word, weight)`` pairs,
    largest ``|weight|`` first; a positive weight pushes the document towards that class.
    """

    index: int
    text: str
    true_class: str
    predicted_class: str
    runner_up: str
    probabilities: dict[str, float]
    weights: dict[str, tuple[tuple[str, float], ...]]
    page: Path

    def data(self) -> dict[str, Any]:
        """Everything but the page's path, as JSON-ready values."""
        fields = dataclasses.asdict(self)
        del fields["page"]
        fields["weights"] = {name: [list(pair) for pair in pairs] for name, pairs in self.weights.items()}
        return fields


def choose_examples(num_examples: int, num_docs: int, seed: int) -> list[int]:
    """``min(num_examples, num_docs)`` distinct document indices in ``[0, num_docs)``, sorted,
    drawn with ``numpy.random.default_rng(seed)`` (so the same seed gives the same indices)."""
    if num_examples < 0 or num_docs < 0:
        raise ValueError(f"num_examples ({num_examples}) and num_docs ({num_docs}) must be >= 0")
    chosen = np.random.default_rng(seed).choice(num_docs, size=min(num_examples, num_docs), replace=False)
    return sorted(int(i) for i in chosen)


def explain_examples(
    predict_proba: Callable[[list[str]], np.ndarray],
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    indices: Sequence[int],
    out_dir: Path,
    *,
    num_features: int,
    num_samples: int,
    seed: int,
    progress: bool = True,
) -> list[Explanation]:
    """Explain the predicted class and the runner-up of ``texts[i]`` for each ``i`` in ``indices``
    with LIME and write ``out_dir/example_<i>.html``; returns the explanations in the order of
    ``indices``.

    ``predict_proba`` maps ``N`` raw strings to ``[N, C]`` class probabilities (``C ==
    len(class_names)``, ``C >= 2``, names distinct); LIME calls it with ``num_samples`` perturbed
    copies of a document at once. ``labels`` is ``[len(texts)]`` true class ids. Example ``i``
    uses LIME random state ``seed + i`` (mod 2**32), so explanations are reproducible.
    """
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(set(class_names)) != len(class_names) or len(class_names) < 2:
        raise ValueError(f"class names must be at least two and distinct, got {list(class_names)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    explanations = []
    for index in tqdm(indices, desc="LIME", unit="doc", disable=not progress):
        if not 0 <= index < len(texts):
            raise ValueError(f"example index {index} is outside the {len(texts)} documents")
        text = texts[index]
        probabilities = np.asarray(predict_proba([text]))[0]  # [C]
        if probabilities.shape != (len(class_names),):
            raise ValueError(f"predict_proba gave {probabilities.shape} scores for {len(class_names)} classes")
        predicted, runner_up = (int(k) for k in np.argsort(-probabilities, kind="stable")[:2])
        explainer = LimeTextExplainer(
            class_names=list(class_names), split_expression=WORD_SPLIT, random_state=(seed + index) % 2**32
        )
        lime = explainer.explain_instance(
            text, predict_proba, num_features=num_features, num_samples=num_samples, labels=(predicted, runner_up)
        )
        path = out_dir / f"example_{index}.html"
        explanation = Explanation(
            index=index,
            text=text,
            true_class=class_names[int(labels[index])],
            predicted_class=class_names[predicted],
            runner_up=class_names[runner_up],
            probabilities={name: float(p) for name, p in zip(class_names, probabilities)},
            weights={
                class_names[k]: tuple((str(word), float(weight)) for word, weight in lime.as_list(label=k))
                for k in (predicted, runner_up)
            },
            page=path,
        )
        page = render_page(explanation).encode("utf-8")
        atomic_write(path, lambda out, data=page: out.write(data))
        explanations.append(explanation)
    return explanations


def render_page(e: Explanation) -> str:
    """One HTML document, without scripts, showing ``e``; all data in it is escaped."""
    esc = html.escape
    predicted, runner_up = e.probabilities[e.predicted_class], e.probabilities[e.runner_up]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>LIME explanation of test document {e.index}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>Test document {e.index}</h1>\n"
        f"<p>True class: <b>{esc(e.true_class)}</b>. Predicted class: <b>{esc(e.predicted_class)}</b>"
        f" (probability {predicted:.4f}). Runner-up: <b>{esc(e.runner_up)}</b> (probability {runner_up:.4f}).</p>\n"
        f"{_probability_table(e.probabilities)}"
        f"{_class_section(e, e.predicted_class, 'predicted')}"
        f"{_class_section(e, e.runner_up, 'runner-up')}"
        "</body>\n</html>\n"
    )


def _probability_table(probabilities: dict[str, float]) -> str:
    rows = "".join(
        f'<tr><td>{html.escape(name)}</td><td class="bar"><span style="width:{100 * p:.1f}%"></span></td>'
        f'<td class="num">{p:.4f}</td></tr>\n'
        for name, p in probabilities.items()
    )
    return f'<h2>Class probabilities</h2>\n<table id="probabilities">\n{rows}</table>\n'


def _class_section(e: Explanation, name: str, role: str) -> str:
    """The document highlighted for class ``name`` (green: towards it, red: against), and its weight table."""
    weights = e.weights[name]
    rows = "".join(
        f'<tr><td>{html.escape(_shorten(word))}</td><td class="num">{weight:+.4f}</td></tr>\n'
        for word, weight in weights
    )
    return (
        f"<h2>Words for {html.escape(name)} ({role})</h2>\n"
        f"<p>Green: the word pushes the prediction towards {html.escape(name)}; red: away from it.</p>\n"
        f'<div class="doc" id="text-{role}">{_highlighted(e.text, dict(weights))}</div>\n'
        f'<table id="weights-{role}">\n<tr><th>word</th><th>weight</th></tr>\n{rows}</table>\n'
    )


def _highlighted(text: str, weights: dict[str, float]) -> str:
    """``text`` (at most :data:`MAX_SHOWN_CHARS` of it) escaped, with every occurrence of a
    weighted word wrapped in a span whose class (``g1..g4``, ``r1..r4``) gives sign and strength
    relative to the largest ``|weight|``."""
    scale = max(PALE_BELOW, *(abs(w) for w in weights.values()))
    shown = text[:MAX_SHOWN_CHARS]
    parts = []
    for i, piece in enumerate(re.split(f"({WORD_SPLIT})", shown)):
        weight = weights.get(piece) if i % 2 == 0 else None  # even pieces are words, odd ones separators
        if weight:
            level = max(1, math.ceil(LEVELS * abs(weight) / scale))
            parts.append(f'<span class="{"g" if weight > 0 else "r"}{level}">{html.escape(piece)}</span>')
        else:
            parts.append(html.escape(piece))
    if len(text) > len(shown):
        parts.append(f" … ({len(text) - len(shown)} more characters)")
    return "".join(parts)


def _shorten(word: str) -> str:
    return word if len(word) <= MAX_SHOWN_WORD else word[: MAX_SHOWN_WORD - 1] + "…"
