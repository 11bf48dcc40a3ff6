"""LIME explanations of single test documents, one self-contained HTML page per document.

LIME's ``Explanation.as_html`` embeds the class names (and the explained words) as JSON inside a
``<script>`` element without escaping ``<``, so a class name such as ``</script><script>...`` would
close the element and run as script. :func:`_lime_page_parts` therefore rewrites ``<``, ``>``,
``&`` (and U+2028/U+2029) in that element as ``\\uXXXX`` escapes; see its docstring for why this
is exact.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from lime.lime_text import LimeTextExplainer
from tqdm import tqdm

from glove_exp.files import atomic_write

# The page ``Explanation.as_html`` (lime 0.2.0.1) returns: its d3 bundle in a <script> in <head>,
# then in <body> a div with a random alphanumeric id and one data <script> that ends the page.
_LIME_PAGE = re.compile(
    r"\A<html>\s*<meta [^<>]*>\s*<head>(?P<bundle><script>.*?</script>)</head><body>"
    r"(?P<div>.*?<script>)(?P<data>.*)(?P<end></script>\s*)</body></html>\Z",
    re.DOTALL,
)
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


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
) -> list[Path]:
    """Explain the predicted class of ``texts[i]`` for each ``i`` in ``indices`` with LIME and write
    ``out_dir/example_<i>.html``; returns those paths in the order of ``indices``.

    ``predict_proba`` maps ``N`` raw strings to ``[N, C]`` class probabilities (``C ==
    len(class_names)``); LIME calls it with ``num_samples`` perturbed copies of a document at once.
    ``labels`` is ``[len(texts)]`` true class ids. Example ``i`` uses LIME random state ``seed + i``
    (mod 2**32), so pages are reproducible.
    """
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in tqdm(indices, desc="LIME", unit="doc", disable=not progress):
        if not 0 <= index < len(texts):
            raise ValueError(f"example index {index} is outside the {len(texts)} documents")
        text = texts[index]
        probabilities = np.asarray(predict_proba([text]))[0]  # [C]
        if probabilities.shape != (len(class_names),):
            raise ValueError(f"predict_proba gave {probabilities.shape} scores for {len(class_names)} classes")
        predicted = int(np.argmax(probabilities))
        explainer = LimeTextExplainer(class_names=list(class_names), random_state=(seed + index) % 2**32)
        explanation = explainer.explain_instance(
            text, predict_proba, num_features=num_features, num_samples=num_samples, labels=(predicted,)
        )
        header = _header(
            index, text, class_names[int(labels[index])], class_names[predicted], float(probabilities[predicted])
        )
        path = out_dir / f"example_{index}.html"
        page = _page(header, explanation.as_html(labels=(predicted,)), index).encode("utf-8")
        atomic_write(path, lambda out, data=page: out.write(data))
        paths.append(path)
    return paths


def _header(index: int, text: str, true_class: str, predicted_class: str, probability: float) -> str:
    """HTML (all input escaped) naming the document, its true and predicted class, and its text."""
    esc = html.escape
    return (
        f'<section class="example">\n<h1>Test document {index}</h1>\n'
        f"<p>True class: <b>{esc(true_class)}</b>. Predicted class: <b>{esc(predicted_class)}</b>"
        f" (probability {probability:.4f}).</p>\n"
        f'<blockquote style="white-space: pre-wrap">{esc(text)}</blockquote>\n</section>\n'
    )


def _page(header: str, lime_html: str, index: int) -> str:
    """One HTML document: LIME's script bundle in <head>; ``header`` then LIME's output in <body>."""
    bundle, body = _lime_page_parts(lime_html)
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>LIME explanation of test document {index}</title>\n{bundle}\n</head>\n"
        f"<body>\n{header}{body}</body>\n</html>\n"
    )


def _lime_page_parts(lime_html: str) -> tuple[str, str]:
    """Split LIME's page into its bundle ``<script>`` element and its body, with the body's data
    script made inert.

    Why escaping the data script is exact: everything before that script is constant (LIME's
    markup, its bundle, which contains no ``</script``, and a random ``[A-Z0-9]`` id), the script
    runs to the page's last ``</script>``, and LIME's own code inside it has no ``<``, ``>`` or
    ``&`` (tests check this), so every such character there sits in a JSON string literal, where
    ``\\u003c`` etc. denote the same character (JSON never escapes ``<``, so none follows a lone
    backslash). Afterwards the script holds no ``<`` at all, so no ``</script`` or ``<!--`` can
    end it early; U+2028/U+2029 are escaped too since older JavaScript forbids them in strings.
    """
    match = _LIME_PAGE.match(lime_html)
    if match is None:
        raise RuntimeError("unexpected layout of LIME's HTML (lime==0.2.0.1 is required)")
    data = re.sub("[<>&\u2028\u2029]", lambda char: _SCRIPT_ESCAPES[char.group()], match["data"])
    return match["bundle"], match["div"] + data + match["end"]
