"""Models and the training loop on small random data (no files, no MLflow)."""

import haiku as hk
import jax
import numpy as np
import pytest

from glove_exp.core.errors import TrainingError
from glove_exp.core.fit import fit
from glove_exp.core.models import ModelSpec, make_constants, model_from_spec
from glove_exp.core.train import OptimizerName, Schedule, make_optimizer, make_predict
from tests.conftest import ADAM, FROZEN_MODEL, hyper

V, D, T, C = 60, 6, 12, 3
MODEL = {"pooling": "mean", **FROZEN_MODEL}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(V, D)).astype(np.float32)
    table[:2] = 0.0
    tokens = rng.integers(2, V, size=(300, T)).astype(np.int32)
    tokens[:, 9:] = 0  # padding
    labels = (table[tokens].sum(1)[:, 0] > 0).astype(np.int32) + (table[tokens].sum(1)[:, 1] > 1).astype(np.int32)
    return table, tokens, labels


def train(data, model_kw, precomputed, epochs=4, patience=None, optimizer=ADAM):
    table, tokens, labels = data
    hyperparams = {**MODEL, **model_kw}
    model = model_from_spec(ModelSpec(C, **hyperparams))
    consts = make_constants(table, None, model.spec.feature_dim(T, D))
    inputs = tokens
    if precomputed:
        apply = lambda p, s, r, x, c, t: (model.features.apply(p, r, x, c), s)  # noqa: E731
        inputs = make_predict(apply, 64)({}, {}, tokens, consts)
    result = fit(
        model.head if precomputed else model.forward, make_optimizer(**optimizer, steps_per_epoch=8, epochs=epochs),
        (inputs[:250], labels[:250]), (inputs[250:], labels[250:]), consts, jax.random.PRNGKey(0),
        hyper(optimizer, model.spec.dropout), epochs=epochs, batch_size=32, eval_batch_size=64, shuffle=True, early_stopping_patience=patience, progress=False,
    )  # fmt: skip
    return result, model, consts


OTHER_POOLINGS = ("mean_max", "hier", "max", "std", "sum", "min")


@pytest.mark.parametrize(
    "pooling, norm",  # the fast subset keeps the default pooling; the full suite checks them all
    [
        *(("mean", norm) for norm in ("none", "batch", "layer")),
        *(pytest.param(p, norm, marks=pytest.mark.slow) for p in OTHER_POOLINGS for norm in ("none", "batch")),
    ],
)
def test_precomputed_features_train_exactly_like_the_lookup_path(data, pooling, norm):
    cfg = {"pooling": pooling, "hidden_sizes": [16], "activation": "relu", "dropout": 0.2, "norm": norm}
    fast, _, _ = train(data, cfg, precomputed=True)
    slow, _, _ = train(data, cfg, precomputed=False)
    # A bias or offset just before batch norm gets no gradient but rounding noise, which Adam scales up to steps:
    # training (the batch's statistics) is unaffected, evaluation subtracts running means that lag such a bias,
    # so a borderline validation row of 50 may flip.
    tolerance = 1 / 50 + 1e-6 if norm == "batch" else 1e-6
    assert [m.val_accuracy for m in fast.history] == pytest.approx(
        [m.val_accuracy for m in slow.history], abs=tolerance
    )
    assert [m.train_loss for m in fast.history] == pytest.approx([m.train_loss for m in slow.history], rel=1e-4)
    if norm != "batch":
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), fast.params, slow.params)


def test_head_params_serve_token_ids(data):
    """A head trained on features predicts identically through the token-id forward function."""
    result, model, consts = train(data, {}, precomputed=True)
    tokens = data[1][250:]
    via_tokens = make_predict(model.forward.apply, 64)(result.params, result.state, tokens, consts)
    features = make_predict(lambda p, s, r, x, c, t: (model.features.apply(p, r, x, c), s), 64)({}, {}, tokens, consts)
    via_features = make_predict(model.head.apply, 64)(result.params, result.state, features, consts)
    np.testing.assert_allclose(via_tokens, via_features, rtol=1e-5, atol=1e-5)


def test_frozen_table_is_not_a_parameter_and_stays_unchanged(data):
    before = data[0].copy()
    result, _, consts = train(data, {"pooling": "flatten"}, precomputed=False)
    assert all(leaf.shape != consts.table.shape for leaf in jax.tree.leaves(result.params))
    np.testing.assert_array_equal(np.asarray(consts.table)[:V], before)
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_trainable_embeddings_are_a_parameter_that_moves(data):
    result, _, consts = train(data, {"trainable": True}, precomputed=False)
    [trained] = [np.asarray(leaf) for leaf in jax.tree.leaves(result.params) if leaf.shape == consts.table.shape]
    assert not np.allclose(trained[:V], np.asarray(consts.table)[:V])
    assert not trained[V:].any()  # the padding rows: no token id reaches them, so no gradient either


@pytest.mark.slow
def test_token_mlp_adds_a_trained_layer_of_the_given_width(data):
    plain, _, _ = train(data, {"pooling": "max", "activation": "relu"}, precomputed=False, epochs=1)
    token, _, _ = train(
        data, {"pooling": "max", "token_hidden_sizes": [8], "activation": "relu"}, precomputed=False, epochs=1
    )
    # D -> 8 per token (weights and biases); the head then reads 8-wide features instead of D-wide ones
    assert (
        hk.data_structures.tree_size(token.params)
        == hk.data_structures.tree_size(plain.params) + D * 8 + 8 + (8 - D) * 128
    )


def counters(state: hk.State) -> set[int]:
    """The step counts of batch norm's running averages (one per average; none without batch norm)."""
    return {int(state[module]["counter"]) for module in state}


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_early_stopping_restores_the_best_epoch(data, norm):
    cfg = {"hidden_sizes": [64], "activation": "relu", "norm": norm}
    result, model, consts = train(data, cfg, precomputed=False, epochs=30, patience=2, optimizer={**ADAM, "lr": 0.05})
    assert len(result.history) < 30
    assert result.selected_epoch == result.best_epoch == len(result.history) - 2
    logits = make_predict(model.forward.apply, 64)(result.params, result.state, data[1][250:], consts)
    assert (logits.argmax(-1) == data[2][250:]).mean() == pytest.approx(result.selected.val_accuracy)
    # the state is the best epoch's too: its running averages have seen that epoch's 8 steps of 32 rows each
    assert counters(result.state) == ({result.selected_epoch * 8} if norm == "batch" else set())


@pytest.mark.parametrize(
    "model_kw",  # the full suite: every pooling, and per-token layers (which get no norm)
    [
        {"pooling": "mean"},
        *(
            pytest.param(
                {"pooling": p, "token_hidden_sizes": [8] if p in ("flatten", "hier") else []}, marks=pytest.mark.slow
            )
            for p in ("flatten", *OTHER_POOLINGS)
        ),
    ],
)
def test_batch_norm_trains_running_statistics_and_predicts_with_them(data, model_kw):
    cfg = {"hidden_sizes": [16], "activation": "relu", "norm": "batch", **model_kw}
    result, model, consts = train(data, cfg, precomputed=False)
    initial = model.forward.init(jax.random.split(jax.random.PRNGKey(0))[0], data[1][:1], consts, True)[1]
    assert len(initial) == 2 * 2  # a mean and a variance on the pooled features and on the hidden layer
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.any(a != b)), initial, result.state))
    assert counters(result.state) == {4 * 8}  # 4 epochs of ceil(250 / 32) steps
    # evaluation normalises with the running averages, never the batch's statistics: a row scores
    # alone as it does among others
    predict, rows = make_predict(model.forward.apply, 64), data[1][250:]
    together = predict(result.params, result.state, rows, consts)
    alone = np.concatenate([predict(result.params, result.state, rows[i : i + 1], consts) for i in range(4)])
    np.testing.assert_allclose(alone, together[:4], rtol=1e-5, atol=1e-5)
    assert result.history[-1].train_loss < result.history[0].train_loss
    # (while training, a row alone is normalised by its own statistics: not what evaluation does)
    training, _ = model.forward.apply(result.params, result.state, jax.random.PRNGKey(1), rows[:1], consts, True)
    assert not np.allclose(training, together[:1], atol=1e-3)


def test_non_finite_loss_stops_with_the_epoch(data):
    table, tokens, labels = data
    broken = (np.full_like(table, np.inf), tokens, labels)
    with pytest.raises(TrainingError, match="in epoch 1"):
        train(broken, {}, precomputed=False)


@pytest.mark.parametrize(
    "name, schedule",
    [(name, Schedule.constant) for name in OptimizerName]
    + [(OptimizerName.adam, s) for s in Schedule if s != Schedule.constant],
)
def test_every_optimizer_and_schedule_learns(data, name, schedule):
    lr = 0.05 if name in (OptimizerName.sgd, OptimizerName.adagrad) else 0.01
    momentum = 0.9 if name == OptimizerName.sgd else 0.0
    optimizer = {
        **ADAM,
        "name": name,
        "lr": lr,
        "schedule": schedule,
        "momentum": momentum,
        "weight_decay": 1e-4,
        "clip_norm": 1.0,
    }
    result, _, _ = train(data, {}, precomputed=True, epochs=5, optimizer=optimizer)
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_fits_of_one_model_and_optimizer_settings_trace_their_programs_once(data):
    """The fits of a process (a sweep's jobs one after another, an Optuna search) that share a model and
    optimizer settings reuse the traced epoch and initialisation: the model runs in no new trace."""
    table, tokens, labels = data
    model = model_from_spec(ModelSpec(C, **{**MODEL, "pooling": "flatten", "hidden_sizes": [8]}))
    traces = []

    def apply(*args):
        traces.append(1)
        return model.forward.apply(*args)

    def init(*args):
        traces.append(1)
        return model.forward.init(*args)

    counted = hk.TransformedWithState(init, apply)
    consts = make_constants(table, None, model.spec.feature_dim(T, D))
    counts = []
    for seed in (0, 1):
        fit(
            counted, make_optimizer(**ADAM, steps_per_epoch=8, epochs=2), (tokens[:250], labels[:250]),
            (tokens[250:], labels[250:]), consts, jax.random.PRNGKey(seed), hyper(ADAM, 0.0), epochs=2, batch_size=32,
            eval_batch_size=64, shuffle=True, early_stopping_patience=None, progress=False,
        )  # fmt: skip
        counts.append(len(traces))
    assert counts[0] > 0 and counts[1] == counts[0]


def test_models_of_one_head_share_the_trace_of_its_training(data, monkeypatch):
    """A mean and a sum pooling train the same head on their precomputed features (as a sweep over
    poolings does): the second fit traces no head, while another head is traced anew."""
    from glove_exp.core import models

    table, tokens, labels = data
    traces = []
    head_logits = models.head_logits
    monkeypatch.setattr(models, "head_logits", lambda *args: traces.append(1) or head_logits(*args))
    counts = []
    for pooling, hidden in (("mean", 11), ("sum", 11), ("sum", 13)):  # head sizes no other test trains
        model = model_from_spec(ModelSpec(C, **{**MODEL, "pooling": pooling, "hidden_sizes": [hidden]}))
        consts = make_constants(table, None, model.spec.feature_dim(T, D))
        features = np.asarray(model.features.apply({}, None, tokens, consts))
        fit(
            model.head, make_optimizer(**ADAM, steps_per_epoch=8, epochs=2), (features[:250], labels[:250]),
            (features[250:], labels[250:]), consts, jax.random.PRNGKey(0), hyper(ADAM, 0.0), epochs=2, batch_size=32,
            eval_batch_size=64, shuffle=True, early_stopping_patience=None, progress=False,
        )  # fmt: skip
        counts.append(len(traces))
    assert counts[0] > 0 and counts[1] == counts[0] and counts[2] > counts[1]
