"""``dataset.unescape``: AG News' HTML and escape debris repaired, on snippets of real AG News rows."""

import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from glove_exp.app.schema import DatasetConfig
from glove_exp.io.datasets import _load_raw, load_splits, restore_ampersands, unescape_text
from tests.conftest import CLASSES, write_csv

# (raw AG News text, repaired), copied from rows of the AG News train and test splits.
REAL = [
    (
        "Vatican Says It #39;s Willing #39; to Help End Najaf",
        "Vatican Says It's Willing' to Help End Najaf",
    ),
    ("clashes with Iraqi Shi #39;ite militiamen", "clashes with Iraqi Shi'ite militiamen"),
    (
        "ordered to  quot;do a complete self-examination, quot; authorities announced.",
        'ordered to "do a complete self-examination," authorities announced.',
    ),
    ("\\$1bn network dealAT amp;T, the US telecoms", "$1bn network dealAT&T, the US telecoms"),
    (
        "government efforts to collect  #36;3.4 billion in back taxes  #151; a massive bill",
        "government efforts to collect $3.4 billion in back taxes \u2014 a massive bill",
    ),
    ("Gaza violence kills &lt;b&gt;...&lt;/b&gt;JERUSALEM", "Gaza violence kills <b>...</b>JERUSALEM"),
    ("BAZARAK, Afghanistan&lt;br&gt;Like virtually", "BAZARAK, Afghanistan<br>Like virtually"),
    (
        "Venezuelans turned out early\\and in large numbers on Sunday to vote in a historic referendum\\that",
        "Venezuelans turned out early and in large numbers on Sunday to vote in a historic referendum that",
    ),
    ('Sophos."\\\\"The 18-year-old Jaschan', 'Sophos." "The 18-year-old Jaschan'),
    ("(NEWS ANALYSIS) :India News  gt; New Delhi, Aug 17", "(NEWS ANALYSIS) :India News > New Delhi, Aug 17"),
]


@pytest.mark.parametrize(("raw", "clean"), REAL)
def test_real_ag_news_debris_is_repaired(raw: str, clean: str) -> None:
    assert unescape_text(raw) == clean


@pytest.mark.parametrize(
    "text",
    [
        'Clean text stays as it is: Iraq\'s oil, AT&T and "quotes".',
        "the champ; a Colt; the #1 team",  # a named entity without "&" must start a word
        "Fish &amp; chips".replace("&amp;", "&"),
    ],
)
def test_clean_text_is_unchanged(text: str) -> None:
    assert unescape_text(text) == text


def test_intact_entities_and_whitespace() -> None:
    assert unescape_text("AT&amp;T &#39;s\t \n x  ") == "AT&T 's x"
    assert unescape_text("") == ""


# What restore_ampersands does, as the one pattern it replaced (slower: the engine tries it at every
# character): a space before a lost entity taken back; "&" not doubled; a named one must start a word.
ONE_PATTERN = re.compile(r" ?((?<!&)#\d+|(?<![&\w])(?:quot|amp|lt|gt));")
# Pieces that make and break lost entities (a word character and a digit that are not ASCII among them)
PIECES = [" ", "&", "#", ";", "39", "\u0663", "x", "_", "\u00e9", "quot", "amp", "lt", "ch", "#39;", "&#39;", "gt;", "&lt;"]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=24).map("".join))
@example("&#39;#1;")  # a whole entity, then one without its "&"
@example("&quot;x lt;(gt;")
def test_restore_ampersands_equals_the_one_pattern(text: str) -> None:
    assert restore_ampersands(text) == ONE_PATTERN.sub(r"&\1;", text)


def test_load_splits_unescapes_every_split_only_when_asked(tmp_path: Path) -> None:
    raw = ["Iraq #39;s oil", "AT amp;T profit", "team won\\the cup", "NASA &lt;b&gt;probe&lt;/b&gt;"] * 5
    for split in ("train", "test"):
        write_csv(tmp_path / f"{split}.csv", raw, [0, 2, 1, 3] * 5)
    cfg = dict(name="ag_news", hub_id="fancyzhx/ag_news", class_names=CLASSES, data_dir=str(tmp_path))
    _load_raw.cache_clear()
    plain = load_splits(DatasetConfig(**cfg, val_fraction=0.2), seed=0)
    cleaned = load_splits(DatasetConfig(**cfg, val_fraction=0.2, unescape=True), seed=0)
    for before, after in zip(plain.parts().values(), cleaned.parts().values()):
        assert set(before.texts) <= set(raw)
        assert after.texts == [unescape_text(text) for text in before.texts]
        assert after.labels.tolist() == before.labels.tolist()
    assert "Iraq's oil" in cleaned.train.texts + cleaned.val.texts
    assert set(cleaned.test.texts) == {"Iraq's oil", "AT&T profit", "team won the cup", "NASA <b>probe</b>"}
