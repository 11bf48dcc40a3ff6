"""The Haiku model's behaviour from its plain hyperparameters, and the saved predictor."""

import json
import tracemalloc

import haiku as hk
import jax
import numpy as np
import pytest

from glove_exp.app.serving import Predictor, TextSettings
from glove_exp.core.arrays import ALIGNMENT, aligned_empty, table_rows, zero_padded
from glove_exp.core.models import Init, ModelSpec, make_constants, model_from_spec
from glove_exp.io.files import save_as
from tests.conftest import recorded_batches

V, D, T, C = 20, 4, 6, 3
MODEL = {
    "pooling": "mean", "mask_padding": True, "hier_window": 3, "weighting": "none", "standardize": False,
    "token_hidden_sizes": [], "hidden_sizes": [16], "activation": "none", "dropout": 0.0, "init": "haiku", "trainable": False,
}  # fmt: skip
RNG = jax.random.PRNGKey(0)


def features(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


def head(**kw):
    model = model_from_spec(ModelSpec(C, **{**MODEL, **kw}))
    consts = make_constants(np.zeros((V, D), np.float32), None, D)
    params, _ = model.head.init(RNG, features(), consts, False)
    return model, params, consts


def affine_gap(activation: str) -> float:
    """``max |f(x) + f(-x) - 2 f(0)|`` of a fresh two-layer head: 0 exactly when it is affine."""
    model, params, consts = head(hidden_sizes=[16, 8], activation=activation)
    x = features()
    at_x, at_minus_x, at_0 = (
        np.asarray(model.head.apply(params, {}, None, v, consts, False)[0]) for v in (x, -x, 0 * x)
    )
    return float(np.abs(at_x + at_minus_x - 2 * at_0).max())


def test_activation_none_makes_the_head_affine():
    assert affine_gap("none") < 1e-4
    assert affine_gap("relu") > 1e-2


def test_dropout_only_while_training():
    model, params, consts = head(dropout=0.5, activation="relu")
    x = features(64)

    def apply(rng: jax.Array | None, training: bool) -> np.ndarray:
        return np.asarray(model.head.apply(params, {}, rng, x, consts, training)[0])

    np.testing.assert_array_equal(apply(None, False), apply(jax.random.PRNGKey(1), False))
    assert not np.allclose(apply(jax.random.PRNGKey(1), True), apply(jax.random.PRNGKey(2), True))
    assert not np.allclose(apply(jax.random.PRNGKey(1), True), apply(None, False))


@pytest.mark.parametrize(
    "init, limit",
    [
        ("glorot_uniform", np.sqrt(6 / (D + 64))),
        ("he_uniform", np.sqrt(12 / D)),
        ("haiku", 2 / np.sqrt(D)),
    ],  # haiku: truncated at 2 stddev
)
def test_init_sets_the_weight_scale_and_biases_start_at_zero(init, limit):
    _, params, _ = head(init=Init(init), hidden_sizes=[64])
    [first] = [w for w in jax.tree.leaves(params) if w.shape == (D, 64)]
    assert np.abs(first).max() <= limit * 1.0001 and np.abs(first).max() > limit / 4
    assert all(not np.any(b) for b in jax.tree.leaves(params) if b.ndim == 1)


def test_predictor_round_trips_through_plain_hyperparameters(tmp_path):
    model = model_from_spec(ModelSpec(C, **{**MODEL, "pooling": "mean_max", "hidden_sizes": [8], "activation": "relu"}))
    rng = np.random.default_rng(0)
    table = rng.normal(size=(V, D)).astype(np.float16).astype(np.float32)  # as text.embedding_matrix gives it
    table[:2] = 0
    consts = make_constants(table, None, 2 * D)
    params, state = model.forward.init(RNG, np.zeros((1, T), np.int32), consts, False)
    words = [f"w{i}" for i in range(V - 2)]
    predictor = Predictor(model, ["a", "b", "c"], TextSettings(True, False, T), words, params, state, consts)
    texts = ["w1 w2 w3", "W4 unknown w5", ""]
    folder = predictor.save(tmp_path / "predictor")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["model"]["pooling"] == "mean_max" and meta["model"]["num_classes"] == C
    saved = np.load(folder / "table.npy")  # the table, the artifact's bulk, as float16
    assert saved.dtype == np.float16 and saved.shape == consts.table.shape
    np.testing.assert_array_equal(saved, np.asarray(consts.table))
    with np.load(folder / "constants.npz") as constants:
        assert constants["token_weights"].dtype == np.float32 and "table" not in constants.files
    loaded = Predictor.load(folder)
    np.testing.assert_allclose(loaded.predict_proba(texts), predictor.predict_proba(texts), rtol=1e-6)
    assert hk.data_structures.tree_size(loaded.params) == hk.data_structures.tree_size(params)
    with np.load(folder / "constants.npz") as constants:  # a model saved before table.npy: the table inside
        np.savez(folder / "constants.npz", **{k: constants[k] for k in constants.files}, table=saved)
    (folder / "table.npy").unlink()
    np.testing.assert_allclose(Predictor.load(folder).predict_proba(texts), predictor.predict_proba(texts), rtol=1e-6)
    (folder / "state.npz").unlink()  # a model saved before batch norm: no state file, an empty state
    assert Predictor.load(folder).state == {} and predictor.state == {}


def test_a_table_is_saved_as_float16_a_block_at_a_time(tmp_path):
    table = np.random.default_rng(0).normal(size=(10_000, 50)).astype(np.float32)  # 2 MB
    tracemalloc.start()
    try:
        save_as(tmp_path / "table.npy", table, np.dtype(np.float16), block_bytes=64 << 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < table.nbytes / 8  # a whole float16 copy is table.nbytes / 2
    np.testing.assert_array_equal(np.load(tmp_path / "table.npy"), table.astype(np.float16))
    save_as(tmp_path / "rows.npy", table[:333], np.dtype(np.float16), block_bytes=7 * 50 * 4)  # a short last block
    np.testing.assert_array_equal(np.load(tmp_path / "rows.npy"), table[:333].astype(np.float16))
    for empty in (table[:0], np.zeros(0, np.float32)):
        assert np.load(save_as(tmp_path / "empty.npy", empty, np.dtype(np.float16))).shape == empty.shape


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_a_normalised_predictor_saves_its_state_and_scores_a_row_alone_as_in_a_batch(tmp_path, norm):
    model = model_from_spec(ModelSpec(C, **{**MODEL, "hidden_sizes": [8], "activation": "relu", "norm": norm}))
    rng = np.random.default_rng(0)
    consts = make_constants(rng.normal(size=(V, D)).astype(np.float16).astype(np.float32), None, D)  # saved as float16
    tokens = rng.integers(2, V, size=(32, T)).astype(np.int32)
    params, state = model.forward.init(RNG, tokens, consts, True)
    _, state = model.forward.apply(params, state, RNG, tokens, consts, True)  # a step of running statistics
    words = [f"w{i}" for i in range(V - 2)]
    predictor = Predictor(model, ["a", "b", "c"], TextSettings(True, False, T), words, params, state, consts)
    loaded = Predictor.load(predictor.save(tmp_path / "predictor"))
    assert loaded.model.spec.norm == norm and len(loaded.state) == (4 if norm == "batch" else 0)
    jax.tree.map(np.testing.assert_array_equal, loaded.state, state)
    texts = ["w1 w2 w3", "w4 w5 w6 w7", "w8", "w9 w10 w1"]
    together = loaded.predict_proba(texts)
    np.testing.assert_allclose(together, predictor.predict_proba(texts), rtol=1e-6)
    alone = np.concatenate([loaded.predict_proba([text]) for text in texts])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("token_dropout", "varies"), [(0.0, False), (0.5, True)])
def test_dropout_is_the_heads_and_token_dropout_the_token_layers(token_dropout, varies):
    """With no hidden layer the head has nowhere to drop, so a training pass varies with its key only
    through ``token_dropout``; evaluation never varies."""
    spec = ModelSpec(C, **{**MODEL, "token_hidden_sizes": [8], "hidden_sizes": [], "activation": "relu",
                           "dropout": 0.5, "token_dropout": token_dropout})  # fmt: skip
    model = model_from_spec(spec)
    consts = make_constants(np.random.default_rng(0).normal(size=(V, D)).astype(np.float32), None, D)
    tokens = np.random.default_rng(1).integers(2, V, size=(4, T))
    params, state = model.forward.init(RNG, tokens, consts, True)
    train = [
        np.asarray(model.forward.apply(params, state, jax.random.PRNGKey(k), tokens, consts, True)[0]) for k in (1, 2)
    ]
    assert (not np.allclose(*train)) == varies
    evals = [np.asarray(model.forward.apply(params, state, None, tokens, consts, False)[0]) for _ in range(2)]
    np.testing.assert_array_equal(*evals)


def test_predictors_of_equal_specs_share_one_trace(monkeypatch):
    """A sweep's jobs build their models apart: equal specs give the same functions, so the second
    job's predictions reuse the first's trace (and compile)."""
    from glove_exp.core import models

    traced = []
    pool = models.pool
    monkeypatch.setattr(models, "pool", lambda *args: traced.append(args[0].shape) or pool(*args))
    spec = {**MODEL, "hidden_sizes": [8], "hier_window": 5}  # a spec no other test traced
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(V - 2)]
    scores, traces = [], []
    for seed in (0, 1):
        model = model_from_spec(ModelSpec(C, **spec))
        consts = make_constants(rng.normal(size=(V, D)).astype(np.float32), None, D)
        params, state = model.forward.init(jax.random.key(seed), np.zeros((1, T), np.int32), consts, False)
        traced.clear()
        predictor = Predictor(model, ["a", "b", "c"], TextSettings(True, False, T), words, params, state, consts)
        scores.append(predictor.predict_proba(["w1 w2 w3", "w4"]))
        traces.append(len(traced))
    assert traces == [1, 0]  # the second model's predictions: no trace
    assert model_from_spec(ModelSpec(C, **spec)) is model and not np.allclose(scores[0], scores[1])


def test_nearby_vocabularies_share_a_table_shape_padded_with_zero_rows():
    """Vocabularies some hundred words apart (two seeds' splits) give tables of the same rows, so that
    their programs share a compiled shape; the padding is zero and never more than an eighth."""
    assert table_rows(27581) == table_rows(27671) == 28672
    for size in [1, 63, 64, 65, 1000, 16384, 16385, 28673, 400_002]:
        assert 0 <= table_rows(size) - size < max(64, size // 8 + 1)
    consts = make_constants(np.ones((70, 3), np.float32), np.full(70, 2.0, np.float32), 3)
    assert consts.table.shape == (128, 3) and consts.token_weights.shape == (128,)
    assert np.asarray(consts.table[:70]).all() and not np.asarray(consts.table[70:]).any()
    assert not np.asarray(consts.token_weights[70:]).any()


def test_a_table_padded_and_aligned_already_is_not_copied_again():
    """embedding_matrix makes the table as the device takes it; each model's constants (a sweep's
    poolings share one table) then use that table, not a padded copy of it each (72 MiB for GloVe 6B)."""
    table = aligned_empty((table_rows(70), 3), np.float32)
    table[:] = 1.0
    assert table_rows(len(table)) == len(table) and zero_padded(table, len(table)) is table
    shifted = table[1:]  # unaligned, and short of its rows: padded in a copy
    padded = zero_padded(shifted, len(table))
    assert padded is not shifted and padded.ctypes.data % ALIGNMENT == 0 and not padded[-1].any()
    assert len(make_constants(table, None, 3).table) == len(table)


def test_a_predictor_on_a_cpu_scores_batches_whose_looked_up_vectors_stay_in_cache(monkeypatch):
    """Long documents of wide vectors: 512 tokens of 64-d vectors are 128 KiB a row, so a batch takes 64
    rows (8 MiB), not ``eval_batch_size``; the scores are those of one batch of every row."""
    if jax.default_backend() != "cpu":
        pytest.skip("an accelerator takes eval_batch_size rows")
    tokens, dim = 512, 64
    model = model_from_spec(ModelSpec(C, **{**MODEL, "pooling": "flatten", "hidden_sizes": [4]}))
    rng = np.random.default_rng(0)
    consts = make_constants(rng.normal(size=(V, dim)).astype(np.float32), None, tokens * dim)
    params, state = model.forward.init(RNG, np.zeros((1, tokens), np.int32), consts, False)
    words = [f"w{i}" for i in range(V - 2)]
    predictor = Predictor(model, ["a", "b", "c"], TextSettings(True, False, tokens), words, params, state, consts)
    ids = rng.integers(0, V, size=(150, tokens)).astype(np.int32)
    rows = recorded_batches(monkeypatch)
    scores = predictor.predict_ids(ids)
    assert rows == [64, 64, 64]
    logits = np.asarray(model.forward.apply(params, state, None, ids, consts, False)[0])
    np.testing.assert_allclose(scores, jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)
