from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from glove_exp.app.explain import MAX_SHOWN_CHARS, explain_examples, write_pages
from glove_exp.app.serving import TextSettings
from glove_exp.core.explain import WeightedFit, choose_examples, explain, kernel_weights, masked_ids, perturbations
from glove_exp.core.text import PAD, tokenize
from tests.conftest import CLASSES, FILLER, TOPICS, make_corpus

XSS = "</script><script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
SETTINGS = dict(num_features=5, num_samples=100, seed=3, progress=False)
TOPIC_IDS = [[2 + i * len(TOPICS[0]) + j for j in range(len(TOPICS[0]))] for i in range(len(TOPICS))]
PAGE_TAGS = set("html head meta title style body h1 h2 p b table tr th td div span".split())


class KeywordModel:
    """A stand-in classifier with a predictor's interface (:class:`glove_exp.app.serving.Predictor`):
    the model's tokeniser, and the softmax of 3 x (count of each class's topic words)."""

    def __init__(self, class_names=CLASSES, max_tokens: int = 10_000):
        self.class_names, self.text = list(class_names), TextSettings(True, False, max_tokens)
        self.index = {
            word: 2 + i * len(TOPICS[0]) + j for i, topic in enumerate(TOPICS) for j, word in enumerate(topic)
        }
        self.calls = 0

    def document_ids(self, text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        tokens = tokenize(text)
        words = list(dict.fromkeys(tokens))
        ids = np.array([self.index.setdefault(t, len(self.index) + 2) for t in tokens], np.int32)
        return ids, np.array([words.index(t) for t in tokens]), words

    def predict_ids(self, ids: np.ndarray) -> np.ndarray:
        self.calls += 1
        scores = 3.0 * np.stack([np.isin(ids, topic).sum(axis=1) for topic in TOPIC_IDS], axis=1)
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
    [explanation] = explain_examples(KeywordModel(names), [text], [label], [0], **{**SETTINGS, **settings})
    [page] = write_pages([explanation], tmp_path, lowercase=True)
    return explanation, page.read_text(encoding="utf-8")


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
    model = KeywordModel()
    found = explain_examples(model, texts, np.array(labels), [1, 5], **SETTINGS)
    pages = write_pages(found, tmp_path / "lime", lowercase=True)
    assert model.calls == 2  # every perturbation of a document scored in one batched call
    assert pages == [tmp_path / "lime" / "example_1.html", tmp_path / "lime" / "example_5.html"]
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
    page = pages[1].read_text(encoding="utf-8")
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
    size = len(page.encode("utf-8"))
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
    first = explain_examples(KeywordModel(), texts, labels, [2], **SETTINGS)
    second = explain_examples(KeywordModel(), texts, labels, [2], **SETTINGS)
    assert first[0].data() == second[0].data()
    pages = [write_pages(found, tmp_path / name, True)[0] for found, name in ((first, "a"), (second, "b"))]
    assert pages[0].read_bytes() == pages[1].read_bytes()


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        explain_examples(KeywordModel(), ["goal"], [1], [1], **SETTINGS)
    with pytest.raises(ValueError, match="labels"):
        explain_examples(KeywordModel(), ["goal"], [1, 2], [0], **SETTINGS)


def test_one_word_in_two_spellings_is_one_feature(tmp_path: Path) -> None:
    """The features are the model's own tokens: ``Tax`` and ``tax`` are one word, weighed once."""
    e, page = explain_one(tmp_path, "Tax cuts: the tax on Oil and oil stocks", 2, num_features=10)
    words = [word for word, _ in e.weights[e.predicted_class]]
    assert sorted(words) == sorted({"tax", "cuts", "the", "on", "oil", "and", "stocks"})
    highlighted = [word for word, _ in Page(page).highlights["text-predicted"]]
    assert highlighted.count("Oil") == 1 and highlighted.count("oil") == 1  # both spellings coloured


@pytest.mark.parametrize("num_features", [3, 10])  # forward selection, and the largest coefficients
def test_the_weights_are_limes_own(num_features: int) -> None:
    """lime 0.2's LimeTextExplainer, given the same words, seed and classifier, finds the same weights."""
    from lime.lime_text import LimeTextExplainer

    text = "stocks fell as oil rose and the team won the cup match while the bank cut its profit"
    model = KeywordModel()
    ids, codes, words = model.document_ids(text)

    def predict(masks: np.ndarray) -> np.ndarray:
        return model.predict_ids(masked_ids(ids, codes, masks, 100))

    def proba(texts: list[str]) -> np.ndarray:
        return model.predict_ids(np.array([([model.index[w] for w in tokenize(t)] + [PAD] * 50)[:50] for t in texts]))

    probabilities, ours = explain(words, predict, CLASSES, num_features=num_features, num_samples=300, seed=7)
    explainer = LimeTextExplainer(class_names=CLASSES, split_expression=tokenize, random_state=7)
    theirs = explainer.explain_instance(text, proba, num_features=num_features, num_samples=300, labels=list(ours))
    for label, pairs in ours.items():
        expected = theirs.as_list(label=label)
        assert [w for w, _ in pairs] == [w for w, _ in expected]
        np.testing.assert_allclose([v for _, v in pairs], [v for _, v in expected], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(probabilities, proba([text])[0], rtol=1e-6)


@pytest.mark.parametrize("num_samples, num_words", [(1000, 40), (10, 30), (50, 3)])  # more words than samples too
def test_the_weighted_fits_are_scikit_learns_ridge(num_samples: int, num_words: int) -> None:
    """lime fits scikit-learn's Ridge with the kernel weights; the fits on one Gram matrix give its numbers."""
    from sklearn.linear_model import Ridge

    rng = np.random.RandomState(num_words)
    masks = perturbations(num_words, num_samples, rng)
    weights, target = kernel_weights(masks), rng.rand(num_samples)
    fit = WeightedFit(masks, weights)
    products, squares = fit.target(target)
    for alpha, features in ((0.01, list(range(num_words))), (1.0, [2, 0, 1])):
        ridge = Ridge(alpha=alpha).fit(masks[:, features], target, sample_weight=weights)
        np.testing.assert_allclose(fit.coefficients(features, alpha, products), ridge.coef_, rtol=1e-9, atol=1e-12)
    for size in range(1, 4):
        features = [int(f) for f in rng.choice(num_words, size, replace=False)]
        ridge = Ridge(alpha=0.0).fit(masks[:, features], target, sample_weight=weights)
        r2 = ridge.score(masks[:, features], target, sample_weight=weights)
        assert fit.r2(features, products, squares) == pytest.approx(r2, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("num_words", [1, 2, 7, 50])
def test_perturbations_are_limes_draws(num_words: int) -> None:
    """Row 0 keeps every word; each later row drops ``rng.choice(num_words, k, replace=False)``, as lime draws."""
    rng = np.random.RandomState(num_words)
    expected = np.ones((300, num_words))
    for row, size in enumerate(rng.randint(1, num_words + 1, 299), start=1):
        expected[row, rng.choice(num_words, size, replace=False)] = 0
    np.testing.assert_array_equal(perturbations(num_words, 300, np.random.RandomState(num_words)), expected)


def test_masked_ids_drop_the_masked_words_and_pull_later_tokens_in() -> None:
    ids, codes = np.array([5, 6, 5, 7, 8]), np.array([0, 1, 0, 2, 3])
    masks = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert masked_ids(ids, codes, masks, 3).tolist() == [[5, 6, 5], [6, 7, 8], [5, 5, PAD], [PAD, PAD, PAD]]
    assert masked_ids(ids, codes, masks[:1], 7).tolist() == [[5, 6, 5, 7, 8, PAD, PAD]]


def test_an_empty_document_has_no_weights() -> None:
    probabilities, weights = explain(
        [], lambda masks: np.full((len(masks), 2), 0.5), ["a", "b"], num_features=5, num_samples=50, seed=0
    )
    assert probabilities.tolist() == [0.5, 0.5] and weights == {0: [], 1: []}
