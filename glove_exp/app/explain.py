"""LIME explanations of test documents, and one self-contained HTML page each: no JavaScript, every
piece of data escaped, and a Content-Security-Policy that forbids scripts."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glove_exp.app.serving import Predictor
from glove_exp.core.explain import Explanation, explain, masked_ids
from glove_exp.core.text import KERAS_FILTERS

# how a page finds the tokeniser's words in the raw text: the runs between its separators
SEPARATORS = "([" + re.escape(KERAS_FILTERS + " ") + "]+)"
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


def explain_examples(
    predictor: Predictor,
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    indices: Sequence[int],
    *,
    num_features: int,
    num_samples: int,
    seed: int,
    progress: bool = True,
) -> list[Explanation]:
    """Explain ``texts[i]`` for each ``i`` in ``indices`` (``labels``: true class ids), drawing example
    ``i``'s perturbations with seed ``seed + i``."""
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    names = predictor.class_names
    explanations = []
    for index in tqdm(indices, desc="LIME", unit="doc", disable=not progress):
        if not 0 <= index < len(texts):
            raise ValueError(f"example index {index} is outside the {len(texts)} documents")
        ids, codes, words = predictor.document_ids(texts[index])

        def predict(masks: np.ndarray, ids=ids, codes=codes) -> np.ndarray:
            return predictor.predict_ids(masked_ids(ids, codes, masks, predictor.text.max_tokens))

        probabilities, weights = explain(
            words, predict, names, num_features=num_features, num_samples=num_samples, seed=seed + index
        )
        predicted, runner_up = weights
        explanations.append(
            Explanation(
                index=index,
                text=texts[index],
                true_class=names[int(labels[index])],
                predicted_class=names[predicted],
                runner_up=names[runner_up],
                probabilities={name: float(p) for name, p in zip(names, probabilities)},
                weights={names[k]: tuple(pairs) for k, pairs in weights.items()},
            )  # fmt: skip
        )
    return explanations


def write_pages(explanations: Sequence[Explanation], out_dir: Path, lowercase: bool) -> list[Path]:
    """``out_dir/example_<i>.html`` for each explanation; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"example_{explanation.index}.html" for explanation in explanations]
    for path, explanation in zip(paths, explanations):
        path.write_text(render_page(explanation, lowercase), encoding="utf-8")
    return paths


def render_page(e: Explanation, lowercase: bool = True) -> str:
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
        f"{_class_section(e, e.predicted_class, 'predicted', lowercase)}"
        f"{_class_section(e, e.runner_up, 'runner-up', lowercase)}"
        "</body>\n</html>\n"
    )


def _probability_table(probabilities: dict[str, float]) -> str:
    rows = "".join(
        f'<tr><td>{html.escape(name)}</td><td class="bar"><span style="width:{100 * p:.1f}%"></span></td>'
        f'<td class="num">{p:.4f}</td></tr>\n'
        for name, p in probabilities.items()
    )
    return f'<h2>Class probabilities</h2>\n<table id="probabilities">\n{rows}</table>\n'


def _class_section(e: Explanation, name: str, role: str, lowercase: bool) -> str:
    """The document highlighted for class ``name`` (green: towards it, red: against), and its weight table."""
    weights = e.weights[name]
    rows = "".join(
        f'<tr><td>{html.escape(_shorten(word))}</td><td class="num">{weight:+.4f}</td></tr>\n'
        for word, weight in weights
    )
    return (
        f"<h2>Words for {html.escape(name)} ({role})</h2>\n"
        f"<p>Green: the word pushes the prediction towards {html.escape(name)}; red: away from it.</p>\n"
        f'<div class="doc" id="text-{role}">{_highlighted(e.text, dict(weights), lowercase)}</div>\n'
        f'<table id="weights-{role}">\n<tr><th>word</th><th>weight</th></tr>\n{rows}</table>\n'
    )


def _highlighted(text: str, weights: dict[str, float], lowercase: bool) -> str:
    """``text`` escaped, each weighted word in a span whose class (``g1..g4``, ``r1..r4``) gives its
    sign and strength relative to the largest ``|weight|``."""
    scale = max(PALE_BELOW, *(abs(w) for w in weights.values()))
    shown = text[:MAX_SHOWN_CHARS]
    parts = []
    for i, piece in enumerate(re.split(SEPARATORS, shown)):  # even pieces are words, odd ones separators
        weight = weights.get(piece.lower() if lowercase else piece) if i % 2 == 0 else None
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
