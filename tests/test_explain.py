from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from glove_exp.explain import choose_examples, explain_examples
from tests.conftest import CLASSES, TOPICS, make_corpus

XSS = "</script><script>alert(1)</script>"
SETTINGS = dict(num_features=5, num_samples=100, seed=3, progress=False)


def keyword_proba(texts: list[str]) -> np.ndarray:
    """``[N, 4]`` softmax of 3 x (count of each class's topic words): a stand-in classifier."""
    words = [re.findall(r"\w+", text.lower()) for text in texts]
    scores = 3.0 * np.array([[sum(w.count(topic) for topic in topics) for topics in TOPICS] for w in words])
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def data_script(page: str) -> str:
    """The contents of the page's last <script> element (LIME's data and calls)."""
    return page[page.rindex("<script>") + len("<script>") : page.rindex("</script>")]


def test_choose_examples_reproducible_distinct_sorted_in_range() -> None:
    chosen = choose_examples(10, 50, seed=7)
    assert chosen == choose_examples(10, 50, seed=7)
    assert chosen != choose_examples(10, 50, seed=8)
    assert chosen == sorted(set(chosen)) and len(chosen) == 10
    assert all(0 <= i < 50 for i in chosen)
    assert choose_examples(10, 4, seed=7) == [0, 1, 2, 3]
    assert choose_examples(0, 50, seed=7) == []


def test_explain_examples_writes_one_page_per_example(tmp_path: Path) -> None:
    texts, labels = make_corpus(8, seed=0)
    labels[5] = 0  # a document of class 1 (Sports) labelled World: true and predicted class differ
    paths = explain_examples(keyword_proba, texts, np.array(labels), CLASSES, [1, 5], tmp_path / "lime", **SETTINGS)
    assert paths == [tmp_path / "lime" / "example_1.html", tmp_path / "lime" / "example_5.html"]
    assert sorted(p.name for p in (tmp_path / "lime").iterdir()) == [
        "example_1.html",
        "example_5.html",
    ]  # no temp files
    page = paths[1].read_text(encoding="utf-8")
    header = page[page.index("<body>") : page.index('<div class="lime top_div"')]
    assert "Test document 5" in header and texts[5] in header
    assert "True class: <b>World</b>" in header and "Predicted class: <b>Sports</b>" in header
    weights = json.loads(
        re.search(r"exp\.show\((\[.*?\]\]), 1, exp_div\)", page)[1]
    )  # LIME's [word, weight] for Sports
    top_word = max(weights, key=lambda pair: abs(pair[1]))[0]
    assert top_word in TOPICS[1] and top_word in texts[5].lower()


def test_explain_examples_is_reproducible(tmp_path: Path) -> None:
    texts, labels = make_corpus(4, seed=0)
    first = explain_examples(keyword_proba, texts, labels, CLASSES, [2], tmp_path / "a", **SETTINGS)
    second = explain_examples(keyword_proba, texts, labels, CLASSES, [2], tmp_path / "b", **SETTINGS)
    assert first[0].read_bytes() == second[0].read_bytes()


def test_markup_in_text_and_class_names_is_inert(tmp_path: Path) -> None:
    texts = ["Goal! The team won the cup match.", f"Stocks {XSS} fell & <b>oil</b> rose"]
    classes = ["World", f"Sports{XSS}", f"Business{XSS}", "Sci/Tech"]
    benign, hostile = (
        explain_examples(keyword_proba, texts, [1, 2], names, [index], tmp_path / str(index), **SETTINGS)[0].read_text(
            encoding="utf-8"
        )
        for index, names in ((0, CLASSES), (1, classes))
    )
    # LIME's own code in its data script has no < > &, so escaping them there can only touch JSON strings.
    assert not re.search("[<>&]", data_script(benign))
    assert "<script>alert(1)" not in hostile
    assert hostile.lower().count("</script") == benign.lower().count("</script") == 2
    assert hostile.lower().count("<script") == benign.lower().count("<script")
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in hostile  # the header
    assert "Business\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in hostile  # LIME's JSON
    embedded = re.search(r"new lime\.Explanation\((\[.*?\])\);", data_script(hostile))[1]
    assert json.loads(embedded) == classes  # the escapes decode to the original names


def test_index_out_of_range_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        explain_examples(keyword_proba, ["goal"], [1], CLASSES, [1], tmp_path, **SETTINGS)
