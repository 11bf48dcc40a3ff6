"""What makes two jobs' data, tokens or features the same, as content keys, and those results as
arrays for the disk cache of :class:`glove_exp.app.shared.SharedWork`.

The data's key (local files only: the hub has its own cache) digests the train and test files' bytes,
the columns and class count the config names, ``dataset.unescape`` and the code that reads them. The
tokens' key digests every split's texts and labels (so a seed that draws another validation split
or training sample gets its own), the vectors' identity, the token settings (``embeddings.lowercase``,
``drop_oov``, ``serving_words``, ``trainer.max_tokens``) and the code that encodes. The features' key
adds the model settings that shape the features (all of :class:`ModelSpec` but the head's), whether
they are precomputed and how (``trainer.precompute_features``, ``feature_dtype``, the batch size
``eval_batch_size`` gives), the code that computes them and the device. A code change, a new NumPy,
Arrow or JAX, or another accelerator is another key: an entry never outlives what made it."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa

from glove_exp.app.schema import Config
from glove_exp.app.shared import Codec
from glove_exp.core import features, models, pooling, text, train
from glove_exp.core.choices import FeatureDtype
from glove_exp.core.features import Inputs, lookup_batch_size
from glove_exp.core.models import Constants, ModelSpec
from glove_exp.core.text import NUM_SPECIAL, Encoded, Tokens, Vocabulary, embedding_matrix
from glove_exp.core.vectors import WordVectors
from glove_exp.io import datasets, tables
from glove_exp.io.arrays_cache import CorruptEntry, Entry
from glove_exp.io.datasets import Data, Split, Splits, layout_of
from glove_exp.io.files import file_sha256, sha256_file
from glove_exp.io.vectors import vectors_identity

KEY_BYTES = 16  # 32 hex digits
# ModelSpec fields that only the head reads (or only per-token layers, whose features are never precomputed)
HEAD_ONLY = frozenset({"num_classes", "hidden_sizes", "activation", "norm", "dropout", "init", "token_dropout"})


def cache_dir(config: Config) -> Path:
    """Where the entries of every kind live: beside the vector cache."""
    return Path(config.embeddings.cache_dir).expanduser()


def settings_hash(settings: dict[str, Any]) -> hashlib.blake2b:
    """A key's hash (``hashlib.blake2b``) over its JSON ``settings``, to read or to update further."""
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode("utf-8"), digest_size=KEY_BYTES)


def data_key(config: Config, files: dict[str, Path]) -> str:
    d = config.dataset
    settings = {
        "files": {split: file_sha256(path) for split, path in files.items()}, "layout": asdict(layout_of(d)),
        "unescape": d.unescape, "code": code_digest(datasets, tables, sys.modules[__name__]),
        "versions": [np.__version__, pa.__version__, platform.python_version()],
    }  # fmt: skip
    return settings_hash(settings).hexdigest()


def data_tokens_key(data_key: str, lowercase: bool) -> str:
    settings = {
        "data": data_key, "lowercase": lowercase, "code": code_digest(text, sys.modules[__name__]),
        "versions": [np.__version__, pa.__version__],
    }  # fmt: skip
    return settings_hash(settings).hexdigest()


def tokens_key(config: Config, splits: Splits, vectors: WordVectors) -> str:
    e = config.embeddings
    settings = {
        "vectors": vectors_identity(vectors), "lowercase": e.lowercase, "drop_oov": e.drop_oov,
        "serving_words": e.serving_words or 0, "max_tokens": config.trainer.max_tokens,
        "code": code_digest(text, sys.modules[__name__]), "versions": [np.__version__, pa.__version__],
    }  # fmt: skip
    digest = settings_hash(settings)
    for split, part in splits.parts().items():
        digest.update(f"|{split}:{'none' if part is None else len(part)}|".encode())
        if part is not None:
            digest.update(part.digest)
    return digest.hexdigest()


def features_key(tokens_key: str, config: Config, spec: ModelSpec, dim: int) -> str:
    t = config.trainer
    settings = {
        "tokens": tokens_key,
        "model": {name: value for name, value in spec.to_dict().items() if name not in HEAD_ONLY},
        "precompute": spec.precomputes(t.precompute_features), "feature_dtype": FeatureDtype(t.feature_dtype).value,
        "batch_size": lookup_batch_size(t.max_tokens, dim, t.eval_batch_size),
        "code": code_digest(text, features, models, pooling, train, sys.modules[__name__]),
        "versions": [np.__version__, jax.__version__, getattr(jax.lib, "__version__", "")],
        "device": [jax.default_backend(), jax.devices()[0].device_kind],
    }  # fmt: skip
    return settings_hash(settings).hexdigest()


def code_digest(*modules: ModuleType) -> str:
    """The modules' source files (their names without a file: a frozen or zipped install)."""
    parts = [sha256_file(Path(module.__file__)) if module.__file__ else module.__name__ for module in modules]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def data_codec(files: dict[str, Path]) -> Codec[Data]:
    """Train's and test's texts, each split's as one UTF-8 array and the texts' lengths, and their labels.
    The entry is keyed by the files' content: the files named are this job's, wherever they are."""

    def encode(data: Data) -> Entry:
        arrays = {}
        for name, part in (("train", data.train), ("test", data.test)):
            arrays |= strings_arrays(name, part.texts) | {f"{name}_labels": part.labels}
        return Entry(arrays)

    def split(entry: Entry, name: str) -> Split:
        return Split(strings_of(entry, name), entry.arrays[f"{name}_labels"])

    def decode(entry: Entry) -> Data:
        return Data(split(entry, "train"), split(entry, "test"), {name: str(path) for name, path in files.items()})

    return Codec(encode, decode)


def strings_arrays(name: str, strings: list[str]) -> dict[str, np.ndarray]:
    """``strings`` as ``<name>_text``, one UTF-8 array, and ``<name>_lengths``, each one's characters."""
    text = "".join(strings).encode("utf-8", "surrogatepass")
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    return {f"{name}_text": np.frombuffer(text, np.uint8), f"{name}_lengths": lengths}


def strings_of(entry: Entry, name: str) -> list[str]:
    """The strings :func:`strings_arrays` stored as ``name``."""
    text = entry.arrays[f"{name}_text"].tobytes().decode("utf-8", "surrogatepass")
    ends = np.cumsum(entry.arrays[f"{name}_lengths"]).tolist()
    if (ends[-1] if ends else 0) != len(text):
        raise CorruptEntry(f"{name}: strings of {ends[-1] if ends else 0} characters in all, {len(text)} stored")
    return [text[start:end] for start, end in zip([0, *ends], ends)]


def data_tokens_codec() -> Codec[tuple[Tokens, Tokens]]:
    """The data's train and test tokens: their types as one UTF-8 array with their lengths, the codes and
    the documents' lengths of both, and where train ends."""

    def encode(value: tuple[Tokens, Tokens]) -> Entry:
        train, test = value
        arrays = {
            "codes": np.concatenate([train.codes, test.codes]),
            "lengths": np.concatenate([train.lengths, test.lengths]),
        }
        arrays |= strings_arrays("types", train.types)
        return Entry(arrays, {"train_docs": len(train)})

    def decode(entry: Entry) -> tuple[Tokens, Tokens]:
        types = strings_of(entry, "types")
        codes, lengths, docs = entry.arrays["codes"], entry.arrays["lengths"], int(entry.facts["train_docs"])
        if len(codes) != int(lengths.sum()) or (len(codes) and not 0 <= codes.min() <= codes.max() < len(types)):
            raise CorruptEntry(f"{len(codes)} codes for {int(lengths.sum())} tokens of {len(types)} types")
        train, test = Tokens(types, codes, lengths).split([docs, len(lengths) - docs])
        return train, test

    return Codec(encode, decode)


def data_tokens_bytes(value: tuple[Tokens, Tokens]) -> int:
    train, test = value
    return train.codes.nbytes + test.codes.nbytes + train.lengths.nbytes + test.lengths.nbytes + 64 * len(train.types)


def data_bytes(data: Data) -> int:
    texts = [*data.train.texts, *data.test.texts]
    return sum(map(len, texts)) + 64 * len(texts) + data.train.labels.nbytes + data.test.labels.nbytes


def tokens_codec(vectors: WordVectors) -> Codec[Encoded]:
    """The token ids, counts and the vector rows of the vocabulary: its words and embedding rows
    come back from ``vectors`` (part of the key), so an entry holds no copy of them."""

    def encode(encoded: Encoded) -> Entry:
        ids = {f"ids_{split}": ids for split, ids in encoded.ids.items() if ids is not None}
        facts = {"splits": list(encoded.ids), "present": [s for s, ids in encoded.ids.items() if ids is not None]}
        arrays = ids | {"counts": encoded.counts, "vector_rows": encoded.vector_rows}
        return Entry(arrays, facts | {"oov_rate": encoded.oov_rate})

    def decode(entry: Entry) -> Encoded:
        rows, counts, facts = entry.arrays["vector_rows"], entry.arrays["counts"], entry.facts
        if len(counts) != len(rows) + NUM_SPECIAL or (len(rows) and not 0 <= rows.min() <= rows.max() < len(vectors)):
            raise CorruptEntry(f"{len(rows)} vector rows (up to {rows.max(initial=0)}) for {len(counts)} counts")
        words = [vectors.words[row] for row in rows.tolist()]
        table = embedding_matrix(Vocabulary(words, rows, counts), vectors)
        table.setflags(write=False)
        ids = {split: entry.arrays[f"ids_{split}"] if split in facts["present"] else None for split in facts["splits"]}
        return Encoded(ids, words, counts, table, float(facts["oov_rate"]), rows)

    return Codec(encode, decode)


def features_codec(spec: ModelSpec, encoded: Encoded, consts: Callable[[], Constants]) -> Codec[Inputs]:
    """Precomputed features (as unsigned integers of their width: ``np.save`` cannot name bfloat16) and
    the standardisation's moments; the rest comes from ``encoded`` and ``consts()``."""

    def encode(inputs: Inputs) -> Entry:
        arrays = {}
        if inputs.precomputed:
            arrays = {split: bits(x) for split, x in (("train", inputs.train), ("val", inputs.val)) if x is not None}
        if spec.standardize:
            arrays |= {name: np.asarray(getattr(inputs.consts, name)) for name in ("feature_mean", "feature_scale")}
        dtype = inputs.train.dtype.name if inputs.precomputed else None
        return Entry(arrays, {"precomputed": inputs.precomputed, "val": inputs.val is not None, "dtype": dtype})

    def decode(entry: Entry) -> Inputs:
        arrays, facts = entry.arrays, entry.facts
        constants = consts()
        if spec.standardize:
            moments = {name: jnp.asarray(arrays[name], jnp.float32) for name in ("feature_mean", "feature_scale")}
            constants = constants._replace(**moments)
        if not facts["precomputed"]:
            return Inputs(encoded.ids["train"], encoded.ids["val"], constants, False)
        dtype = FeatureDtype(facts["dtype"]).numpy
        val = arrays["val"].view(dtype) if facts["val"] else None
        return Inputs(arrays["train"].view(dtype), val, constants, True)

    return Codec(encode, decode)


def bits(array: np.ndarray) -> np.ndarray:
    return array.view(f"<u{array.dtype.itemsize}")


def encoded_bytes(encoded: Encoded) -> int:
    arrays = [*encoded.ids.values(), encoded.counts, encoded.table, encoded.vector_rows]
    return sum(a.nbytes for a in arrays if a is not None) + 64 * len(encoded.words)  # about what a short str takes


def inputs_bytes(inputs: Inputs) -> int:
    """What the features hold beyond the tokens: precomputed arrays, and the constants (a copy of the table)."""
    own = [inputs.train, inputs.val] if inputs.precomputed else []
    return sum(int(a.nbytes) for a in [*own, *inputs.consts] if a is not None)


def read_only(value: Any) -> Any:
    """``value`` (Encoded or Inputs) with its NumPy arrays made read-only: later jobs get the same ones."""
    arrays = (
        [*value.ids.values(), value.counts, value.table] if isinstance(value, Encoded) else [value.train, value.val]
    )
    for array in arrays:
        if isinstance(array, np.ndarray):
            array.setflags(write=False)
    return value
