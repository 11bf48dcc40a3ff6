"""A :class:`Predictor` is self-contained (tokeniser settings, vocabulary, the embedding rows it needs,
parameters and state) and saves to a folder that :class:`GloveClassifier` serves as an MLflow pyfunc."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import haiku as hk
import jax
import mlflow.pyfunc
import numpy as np
import pandas as pd

from glove_exp.core.models import Constants, Model, ModelSpec, model_from_spec
from glove_exp.core.text import NUM_SPECIAL, OOV, encode, tokenize, tokenize_all
from glove_exp.core.train import make_predict

TEXT_COLUMN = "text"


@dataclass(frozen=True)
class TextSettings:
    lowercase: bool
    drop_oov: bool
    max_tokens: int


class Predictor:
    """``predict_proba(texts) -> [N, C]`` for a trained model (jitted, batched)."""

    def __init__(
        self, model: Model, class_names: Sequence[str], text: TextSettings, words: list[str],
        params: hk.Params, state: hk.State, consts: Constants, batch_size: int = 4096,
    ):  # fmt: skip
        self.model, self.class_names, self.text, self.words = model, list(class_names), text, words
        self.params, self.state, self.consts = params, state, consts
        self._index = {word: i + NUM_SPECIAL for i, word in enumerate(words)}
        self._predict = make_predict(model.forward.apply, batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Raw strings -> ``[N, max_tokens]`` int32 token ids."""
        tokens = tokenize_all(texts, self.text.lowercase)
        return encode(tokens, self._index, self.text.max_tokens, self.text.drop_oov)

    def document_ids(self, text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """One document, untruncated, as the model reads it: ``[L]`` token ids, ``[L]`` the index of
        each token's word in ``words``, and ``words``, its distinct tokens in order of first occurrence."""
        tokens = tokenize(text, self.text.lowercase)
        if self.text.drop_oov:
            tokens = [token for token in tokens if token in self._index]
        words = list(dict.fromkeys(tokens))
        position = {word: i for i, word in enumerate(words)}
        ids = np.array([self._index.get(token, OOV) for token in tokens], np.int32)
        return ids, np.array([position[token] for token in tokens], np.int64), words

    def predict_ids(self, ids: np.ndarray) -> np.ndarray:
        """``[N, max_tokens]`` token ids -> ``[N, C]`` float32 class probabilities."""
        logits = self._predict(self.params, self.state, ids, self.consts)
        return np.asarray(jax.nn.softmax(logits, axis=-1), dtype=np.float32)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``[N, C]`` float32 class probabilities."""
        return self.predict_ids(self.encode(list(texts)))

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.model.spec.to_dict(), "class_names": self.class_names, "text": asdict(self.text)}
        (folder / "model.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (folder / "vocab.txt").write_text("\n".join(self.words), encoding="utf-8")
        # The table (the artifact's bulk) as float16: the pipeline's tables hold float16 values
        # already (text.embedding_matrix), so nothing is lost; loading widens it to float32 again.
        constants = {k: np.asarray(v) for k, v in self.consts._asdict().items()}
        np.savez(folder / "constants.npz", **constants | {"table": constants["table"].astype(np.float16)})
        for kind, tree in (("params", self.params), ("state", self.state)):  # state: batch norm's statistics
            flat = {f"{module}::{name}": np.asarray(v) for module, names in tree.items() for name, v in names.items()}
            np.savez(folder / f"{kind}.npz", **flat)
        return folder

    @classmethod
    def load(cls, folder: Path) -> Predictor:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        words = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        with np.load(folder / "constants.npz") as data:
            consts = Constants(**{k: jax.numpy.asarray(data[k], dtype=np.float32) for k in Constants._fields})
        params, state = (load_tree(folder / f"{kind}.npz") for kind in ("params", "state"))
        model = model_from_spec(ModelSpec(**meta["model"]))  # models saved before ModelSpec store the same keys
        return cls(model, meta["class_names"], TextSettings(**meta["text"]), words, params, state, consts)


def load_tree(path: Path) -> dict[str, dict[str, Any]]:
    """A Haiku params or state tree saved as ``module::name`` arrays; empty without the file (models saved
    before batch norm have no ``state.npz``)."""
    tree: dict[str, dict[str, Any]] = {}
    if path.exists():
        with np.load(path) as data:
            for key in data.files:
                module, name = key.split("::")
                tree.setdefault(module, {})[name] = jax.numpy.asarray(data[key])
    return tree


def texts_from_input(model_input: Any) -> list[str]:
    """Accept a list/array of strings, a Series, or a DataFrame (its ``text`` column, else the first)."""
    if isinstance(model_input, pd.DataFrame):
        column = TEXT_COLUMN if TEXT_COLUMN in model_input.columns else model_input.columns[0]
        model_input = model_input[column]
    if isinstance(model_input, str):
        model_input = [model_input]
    return ["" if text is None else str(text) for text in list(model_input)]


class GloveClassifier(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: strings in, a DataFrame of per-class probabilities (class-name columns) out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = Predictor.load(Path(context.artifacts["predictor"]))

    # The hint must be one MLflow infers no schema from (the signature comes from the input example):
    # without any, defining this class prints a multi-line warning in every run and every process that
    # loads the model. pyfunc hands lists and Series over as a DataFrame; texts_from_input takes all three.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        probabilities = self.predictor.predict_proba(texts_from_input(model_input))
        return pd.DataFrame(probabilities.astype(np.float64), columns=self.predictor.class_names)
