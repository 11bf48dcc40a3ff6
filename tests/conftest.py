"""Shared fixtures: small synthetic corpora and GloVe-format files (never the network or real data)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
# Each class has its own topic words; documents mix them with shared filler words.
TOPICS = [
    ["war", "president", "election", "minister", "iraq", "troops"],
    ["goal", "match", "team", "season", "coach", "cup"],
    ["stocks", "market", "profit", "oil", "shares", "bank"],
    ["software", "internet", "computer", "space", "nasa", "microsoft"],
]
FILLER = ["the", "a", "of", "to", "in", "on", "said", "new", "for", "with"]


def make_corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` synthetic news-like documents with labels 0..3 (balanced)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % len(CLASSES)
        words = list(rng.choice(TOPICS[label], size=4)) + list(rng.choice(FILLER, size=6))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + ", reports say.")
        labels.append(label)
    return texts, labels


def write_csv(path: Path, texts: list[str], labels: list[int]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path


def write_glove(path: Path, dim: int = 8, seed: int = 0) -> Path:
    """A GloVe text file covering the synthetic vocabulary; topic words cluster by class."""
    rng = np.random.default_rng(seed)
    lines = []
    for label, words in enumerate(TOPICS):
        centre = rng.normal(size=dim) * 2
        for word in words:
            lines.append((word, centre + rng.normal(scale=0.3, size=dim)))
    for word in FILLER:
        lines.append((word, rng.normal(scale=0.5, size=dim)))
    path.write_text("".join(f"{w} {' '.join(f'{v:.5f}' for v in vec)}\n" for w, vec in lines), encoding="utf-8")
    return path


@pytest.fixture
def ag_dir(tmp_path: Path) -> Path:
    """A data_dir with train.csv (400 rows) and test.csv (120 rows) in the hub's text,label layout."""
    folder = tmp_path / "ag"
    folder.mkdir()
    write_csv(folder / "train.csv", *make_corpus(400, seed=1))
    write_csv(folder / "test.csv", *make_corpus(120, seed=2))
    return folder


@pytest.fixture
def glove_file(tmp_path: Path) -> Path:
    return write_glove(tmp_path / "tiny.8d.txt")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Tests never see the developer's data, tracking server or vector cache."""
    for name in ("GLOVE_EXP_DATA_DIR", "MLFLOW_TRACKING_URI", "GLOVE_EXP_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLOVE_EXP_CACHE_DIR", str(tmp_path / "glove-cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
