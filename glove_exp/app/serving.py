"""A :class:`Predictor` is self-contained (tokeniser settings, vocabulary, the embedding rows it needs,
parameters and state) and saves to a folder that :class:`GloveClassifier` serves as an MLflow pyfunc."""

from __future__ import annotations

import ast
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
from mlflow.exceptions import MlflowException

from glove_exp.core.features import lookup_batch_size
from glove_exp.core.models import Constants, Model, ModelSpec, model_from_spec
from glove_exp.core.text import NUM_SPECIAL, OOV, encode, tokenize, tokenize_all
from glove_exp.core.train import make_predict
from glove_exp.io.files import save_as

TEXT_COLUMN = "text"
TABLE_FILE = "table.npy"  # float16, beside constants.npz
ACCEPTED_INPUT = (
    "the model scores texts: a list of strings, a pandas Series of strings or a DataFrame with one column, "
    f"'{TEXT_COLUMN}'"
)


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
        index: dict[str, int] | None = None,
    ):  # fmt: skip
        self.model, self.class_names, self.text, self.words = model, list(class_names), text, words
        self.params, self.state, self.consts = params, state, consts
        self._index = index or {word: i + NUM_SPECIAL for i, word in enumerate(words)}  # word -> token id
        rows = lookup_batch_size(text.max_tokens, consts.table.shape[1], batch_size)  # on a CPU, fewer
        self._predict = make_predict(model.forward.apply, rows)

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
        logits = np.asarray(self._predict(self.params, self.state, ids, self.consts), dtype=np.float32)
        return softmax(logits)

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
        save_as(folder / TABLE_FILE, constants.pop("table"), np.dtype(np.float16))
        np.savez(folder / "constants.npz", **constants)
        for kind, tree in (("params", self.params), ("state", self.state)):  # state: batch norm's statistics
            flat = {f"{module}::{name}": np.asarray(v) for module, names in tree.items() for name, v in names.items()}
            np.savez(folder / f"{kind}.npz", **flat)
        return folder

    @classmethod
    def load(cls, folder: Path) -> Predictor:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        words = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        with np.load(folder / "constants.npz") as data:
            arrays = {k: data[k] for k in data.files}
        if (folder / TABLE_FILE).exists():  # models saved before it hold the table in constants.npz
            arrays["table"] = np.load(folder / TABLE_FILE)
        consts = Constants(**{k: jax.numpy.asarray(arrays[k], dtype=np.float32) for k in Constants._fields})
        params, state = (load_tree(folder / f"{kind}.npz") for kind in ("params", "state"))
        model = model_from_spec(ModelSpec(**meta["model"]))  # models saved before ModelSpec store the same keys
        return cls(model, meta["class_names"], TextSettings(**meta["text"]), words, params, state, consts)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, C]`` logits, on the host: a few classes per row, so NumPy is quicker than
    the device ops it would take (each compiled anew for each ``N``); NaN logits give NaN rows."""
    with np.errstate(all="ignore"):  # diverged parameters: NaN is the answer (the pipeline says so), not a warning
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True, initial=-np.inf))  # initial: no rows
        return shifted / shifted.sum(axis=-1, keepdims=True)


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
    """The texts of ``model_input``: a string, a list, tuple or 1-d array of strings, a Series of strings, or
    a DataFrame whose one column is ``text`` (or ``0``, the column pandas and MLflow give a plain list);
    anything else raises :func:`invalid_input`'s error."""
    if isinstance(model_input, pd.DataFrame):
        if [str(column) for column in model_input.columns] not in ([TEXT_COLUMN], ["0"]):
            raise invalid_input(f"got a DataFrame with columns {list(model_input.columns)}")
        model_input = model_input.iloc[:, 0]
    if isinstance(model_input, np.ndarray) and model_input.ndim == 0:  # served {"inputs": "a text"} or 5
        model_input = model_input.item()
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, np.ndarray) and model_input.ndim != 1:
        raise invalid_input(f"got a {model_input.ndim}-d array of shape {model_input.shape}")
    if not isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
        raise invalid_input(f"got {described(model_input)}")
    texts = list(model_input)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise invalid_input(f"text {i} is {described(text)}")
        if is_list_repr(text):
            raise invalid_input(f"text {i} is {described(text)}, a Python list written as a string: pass the list")
    return texts


def invalid_input(problem: str) -> MlflowException:
    """The served model's one error for input that is not texts (``mlflow models serve`` answers HTTP 400)."""
    return MlflowException.invalid_parameter_value(f"{ACCEPTED_INPUT}; {problem}")


def described(value: Any) -> str:
    """``value``'s type and its repr, cut to a line's worth."""
    shown = repr(value.item() if isinstance(value, np.generic) else value)
    return f"{type(value).__name__} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def is_list_repr(text: str) -> bool:
    """Whether ``text`` is, whole, a Python list literal of strings (``str(["a", "b"])``, also NumPy's
    ``['a' 'b']``): never a document, always a caller who passed ``str(texts)`` for ``texts``."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return False
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class GloveClassifier(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: strings in, a DataFrame of per-class probabilities (class-name columns) out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = Predictor.load(Path(context.artifacts["predictor"]))

    # The hint must be one MLflow infers no schema from: without any, defining this class prints a
    # multi-line warning in every process that loads the model. Models logged with an input schema (before
    # texts_from_input checked input) get lists and Series from MLflow as a DataFrame with column 0.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        texts = texts_from_input(model_input)
        names = self.predictor.class_names
        probabilities = self.predictor.predict_proba(texts) if texts else np.zeros((0, len(names)))
        return pd.DataFrame(probabilities.astype(np.float64), columns=names)
