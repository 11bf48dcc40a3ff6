from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from glove_exp.core.explain import MAX_SHOWN_CHARS, choose_examples, explain_examples
from tests.conftest import CLASSES, FILLER, TOPICS, make_corpus

XSS = "</script><script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
SETTINGS = dict(num_features=5, num_samples=100, seed=3, progress=False)
PAGE_TAGS = set("html head meta title style body h1 h2 p b table tr th td div span".split())


def keyword_proba(texts: list[str]) -> np.ndarray:
    """``[N, 4]`` softmax of 3 x (count of each class's topic words): a stand-in classifier."""
    words = [re.findall(r"\w+", text.lower()) for text in texts]
    scores = 3.0 * np.array([[sum(w.count(topic) for topic in topics) for topics in TOPICS] for w in words])
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


class Page(HTMLParser):
    """What a page shows: its tags and attributes, the cells of each table (by id), and the words
    highlighted in each text block (by id) with their colour class."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.highlights: dict[str, list[tuple[str, str]]] = {}
        self._table: str | None = None
        self._block: str | None = None
        self._span: str | None = None
        self._cell: list[str] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table = attributes["id"]
            self.tables[self._table] = []
        elif tag == "tr":
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "div":
            self._block = attributes["id"]
            self.highlights[self._block] = []
        elif tag == "span" and self._block:
            self._span = attributes["class"]

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "div":
            self._block = None
        elif tag == "span":
            self._span = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._span and self._block:
            self.highlights[self._block].append((data, self._span))


def explain_one(tmp_path: Path, text: str, label: int, names=CLASSES, **settings):
    [explanation] = explain_examples(keyword_proba, [text], [label], names, [0], tmp_path, **{**SETTINGS, **settings})
    return explanation, explanation.page.read_text(encoding="utf-8")


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
    found = explain_examples(keyword_proba, texts, np.array(labels), CLASSES, [1, 5], tmp_path / "lime", **SETTINGS)
    assert [e.page for e in found] == [tmp_path / "lime" / "example_1.html", tmp_path / "lime" / "example_5.html"]
    assert sorted(p.name for p in (tmp_path / "lime").iterdir()) == ["example_1.html", "example_5.html"]  # no tmp
    e = found[1]
    assert (e.index, e.text, e.true_class, e.predicted_class) == (5, texts[5], "World", "Sports")
    assert e.runner_up != "Sports" and list(e.probabilities) == CLASSES
    assert max(e.probabilities.values()) == e.probabilities["Sports"]
    assert sum(e.probabilities.values()) == pytest.approx(1.0)
    assert set(e.weights) == {"Sports", e.runner_up}
    top_word = e.weights["Sports"][0][0]  # largest |weight| first
    assert top_word in TOPICS[1] and top_word in texts[5].lower()
    assert e.weights["Sports"][0][1] > 0
    page = e.page.read_text(encoding="utf-8")
    assert "Test document 5" in page
    assert "True class: <b>World</b>" in page and "Predicted class: <b>Sports</b>" in page
    assert f"Runner-up: <b>{e.runner_up}</b>" in page


def test_page_shows_the_data_it_returns(tmp_path: Path) -> None:
    """Probabilities, both classes' weight tables and the highlighted words on the page are the
    explanation's data (the JSON logged beside the page)."""
    text = "Oil stocks rose as the team won the cup match; shares of the bank fell, the coach said."
    e, page = explain_one(tmp_path, text, 2, num_features=6)
    data = json.loads(json.dumps(e.data()))  # what mlflow.log_dict writes
    assert set(data) == {"index", "text", "true_class", "predicted_class", "runner_up", "probabilities", "weights"}
    shown = Page(page)
    assert shown.tables["probabilities"] == [[name, "", f"{p:.4f}"] for name, p in data["probabilities"].items()]
    for role, name in (("predicted", data["predicted_class"]), ("runner-up", data["runner_up"])):
        weights = data["weights"][name]
        assert len(weights) == 6
        assert shown.tables[f"weights-{role}"] == [["word", "weight"]] + [[w, f"{v:+.4f}"] for w, v in weights]
        highlighted = shown.highlights[f"text-{role}"]
        assert {word for word, _ in highlighted} == {w for w, _ in weights}  # every explained word occurs in text
        sign = {w: "g" if v > 0 else "r" for w, v in weights}
        assert all(colour[0] == sign[word] for word, colour in highlighted)
        strongest = weights[0][0]
        assert {colour for word, colour in highlighted if word == strongest} == {sign[strongest] + "4"}
    assert data["weights"][data["predicted_class"]] != data["weights"][data["runner_up"]]


def test_page_is_small_and_has_no_script_on_a_long_document(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = rng.choice([*TOPICS[0], *TOPICS[2], *FILLER], size=6000)
    text = " ".join(words) + " & <b>the end</b>"
    e, page = explain_one(tmp_path, text, 0, num_features=10)
    size = e.page.stat().st_size
    assert size < 150_000, size
    assert "<script" not in page.lower() and "javascript" not in page.lower()
    assert {tag for tag, _ in Page(page).tags} <= PAGE_TAGS
    assert f"({len(text) - MAX_SHOWN_CHARS} more characters)" in page
    assert e.text == text  # the data keeps the whole document


def test_markup_in_text_and_class_names_is_inert(tmp_path: Path) -> None:
    text = f"Stocks {XSS} fell {IMG} & <b>oil</b> shares rose; the team lost the cup"
    names = ["World", f"Sports{IMG}", f"Business{XSS}", "Sci/Tech"]
    e, page = explain_one(tmp_path, text, 1, names)
    assert (e.predicted_class, e.runner_up) == (f"Business{XSS}", f"Sports{IMG}")
    lowered = page.lower()
    assert "<script" not in lowered and "<img" not in lowered and "javascript" not in lowered
    shown = Page(page)
    assert {tag for tag, _ in shown.tags} <= PAGE_TAGS
    assert not [name for _, attrs in shown.tags for name in attrs if name.startswith("on")]
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert [row[0] for row in shown.tables["probabilities"]] == names  # the escapes show the original names
    assert "Content-Security-Policy" in page


def test_explain_examples_is_reproducible(tmp_path: Path) -> None:
    texts, labels = make_corpus(4, seed=0)
    first = explain_examples(keyword_proba, texts, labels, CLASSES, [2], tmp_path / "a", **SETTINGS)
    second = explain_examples(keyword_proba, texts, labels, CLASSES, [2], tmp_path / "b", **SETTINGS)
    assert first[0].data() == second[0].data()
    assert first[0].page.read_bytes() == second[0].page.read_bytes()


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        explain_examples(keyword_proba, ["goal"], [1], CLASSES, [1], tmp_path, **SETTINGS)
    with pytest.raises(ValueError, match="distinct"):
        explain_examples(keyword_proba, ["goal"], [1], ["a", "b", "a", "c"], [0], tmp_path, **SETTINGS)
