"""Members of a vmapped group train exactly as each would alone (no files, no MLflow)."""

from dataclasses import replace

import jax
import numpy as np
import pytest

from glove_exp.core.fit import Failed, Member, fit, fit_group, init_members, member_tree, programs, stack_data
from glove_exp.core.models import ModelSpec, make_constants, model_from_spec
from glove_exp.core.train import Hyper, make_optimizer, make_predict
from tests.conftest import ADAM, FROZEN_MODEL, hyper

V, D, T, C, N = 60, 6, 12, 3, 300
SETTINGS = {"batch_size": 32, "eval_batch_size": 64, "shuffle": True, "progress": False}
MODEL = ModelSpec(
    C, **{**FROZEN_MODEL, "pooling": "flatten", "hidden_sizes": [16], "activation": "relu", "dropout": 0.2}
)


def dataset(seed: int, vocab: int = V):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(vocab, D)).astype(np.float32)
    table[:2] = 0.0
    tokens = rng.integers(2, vocab, size=(N, T)).astype(np.int32)
    tokens[:, 9:] = 0
    labels = (table[tokens].sum(1)[:, 0] > 0).astype(np.int32) + (table[tokens].sum(1)[:, 1] > 1).astype(np.int32)
    consts = make_constants(table, None, MODEL.feature_dim(T, D))
    return (tokens[:250], labels[:250]), (tokens[250:], labels[250:]), consts


@pytest.fixture(scope="module")
def model():
    return model_from_spec(MODEL)


def optimizer(epochs, settings=ADAM):
    return make_optimizer(**settings, steps_per_epoch=8, epochs=epochs)


def alone(model, data, seed, epochs=2, patience=None, settings=ADAM):
    train, val, consts = data
    return fit(
        model.forward, optimizer(epochs, settings), train, val, consts, jax.random.PRNGKey(seed),
        hyper(settings, model.spec.dropout), epochs=epochs, early_stopping_patience=patience, **SETTINGS,
    )  # fmt: skip


def together(model, datas, seeds, epochs=2, patience=None, hypers=None, settings=ADAM):
    hypers = hypers or [hyper(ADAM, model.spec.dropout)] * len(seeds)
    members = [Member(d[0], d[1], d[2], jax.random.PRNGKey(s), h) for d, s, h in zip(datas, seeds, hypers)]
    return fit_group(
        model.forward,
        optimizer(epochs, settings),
        members,
        epochs=epochs,
        early_stopping_patience=patience,
        **SETTINGS,
    )


def assert_same(grouped, single, model, val, consts):
    assert [m.train_loss for m in grouped.history] == pytest.approx([m.train_loss for m in single.history], abs=1e-4)
    assert [m.val_loss for m in grouped.history] == pytest.approx([m.val_loss for m in single.history], abs=1e-4)
    assert (grouped.selected_epoch, grouped.best_epoch) == (single.selected_epoch, single.best_epoch)
    predict = make_predict(model.forward.apply, 64)
    np.testing.assert_array_equal(
        predict(grouped.params, grouped.state, val[0], consts).argmax(-1),
        predict(single.params, single.state, val[0], consts).argmax(-1),
    )


def test_seeds_on_shared_data_train_as_they_would_alone(model):
    data = dataset(0)
    grouped = together(model, [data] * 3, [0, 1, 2])
    for seed, result in enumerate(grouped):
        assert_same(result, alone(model, data, seed), model, data[1], data[2])
    assert grouped[0].history[0].train_loss != grouped[1].history[0].train_loss  # each its own init and shuffle


def test_members_with_their_own_data_and_vocabularies(model):
    """A seed's own validation split gives it its own arrays: they are stacked, smaller tables padded."""
    datas = [dataset(1), dataset(2, vocab=V + 40)]  # tables of 64 and 128 rows
    grouped = together(model, datas, [3, 4])
    for data, seed, result in zip(datas, [3, 4], grouped):
        assert_same(result, alone(model, data, seed), model, data[1], data[2])


def test_one_program_initialises_each_member_as_haiku_and_optax_would_alone(model):
    """The members' parameters, optimizer states and training keys come from one jitted program: each
    member's are those its own key gives one model, and each optimizer state holds its learning rate."""
    datas = [dataset(5), dataset(6, vocab=V + 40)]  # tables of 64 and 128 rows (table_rows)
    hypers = [hyper(ADAM, 0.2), hyper({**ADAM, "lr": 0.01, "weight_decay": 0.1}, 0.2)]
    keys = [jax.random.PRNGKey(7), jax.random.PRNGKey(8)]
    inputs, labels, consts = stack_data([d[0][0] for d in datas], [d[0][1] for d in datas], [d[2] for d in datas])
    assert inputs.shape == (2, 250, T) and labels.shape == (2, 250) and consts.table.shape == (2, 128, D)
    np.testing.assert_array_equal(consts.table[0, :V], datas[0][2].table[:V])
    assert not np.asarray(consts.table[0, V:]).any()  # the smaller table padded with zero rows
    example = np.stack([d[0][0][:1] for d in datas])
    stacked = Hyper(*(np.array(values, np.float32) for values in zip(*hypers)))
    params, state, opt_state, rngs = init_members(
        keys, example, consts, stacked, transformed=model.forward, optimizer=optimizer(2), data_axis=0
    )
    for m, (data, key, settings) in enumerate(zip(datas, keys, hypers)):
        init_key, train_key = jax.random.split(key)
        own_params, own_state = model.forward.init(init_key, data[0][0][:1], data[2], True)
        own = member_tree((params, state), m)
        assert jax.tree.structure(own) == jax.tree.structure((own_params, own_state))
        for got, want in zip(jax.tree.leaves(own), jax.tree.leaves((own_params, own_state))):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(rngs[m], train_key)
        assert float(opt_state.hyperparams["learning_rate"][m]) == pytest.approx(settings.learning_rate)
        assert float(opt_state.hyperparams["weight_decay"][m]) == pytest.approx(settings.weight_decay)


@pytest.mark.parametrize(
    ("name", "schedule"), [("adam", "constant"), ("adamw", "warmup_cosine"), ("sgd", "exponential")]
)
def test_members_with_their_own_learning_rate_weight_decay_and_dropout(name, schedule):
    """One program of members that differ in the scalar settings: each its own dropout rate, and each
    optimizer state its own learning rate and weight decay."""
    data = dataset(0)
    settings = [
        {**ADAM, "name": name, "schedule": schedule, "lr": lr, "weight_decay": wd}
        for lr, wd in [(1e-3, 0.0), (3e-3, 1e-3), (1e-2, 0.0)]
    ]  # fmt: skip
    dropouts = [0.1, 0.2, 0.5]  # a rate of 0 is another program: see identity.program_key
    grouped = together(
        model_from_spec(MODEL),
        [data] * 3,
        [0, 0, 1],
        hypers=[hyper(s, d) for s, d in zip(settings, dropouts)],
        settings=settings[0],
    )
    for seed, setting, dropout, result in zip([0, 0, 1], settings, dropouts, grouped):
        own = model_from_spec(replace(MODEL, dropout=dropout))
        assert_same(result, alone(own, data, seed, settings=setting), own, data[1], data[2])
    assert len({r.history[-1].train_loss for r in grouped}) == 3


def test_early_stopping_is_per_member(model):
    data = dataset(0)
    epochs, patience = 12, 1
    grouped = together(model, [data] * 4, range(4), epochs=epochs, patience=patience)
    singles = [alone(model, data, seed, epochs=epochs, patience=patience) for seed in range(4)]
    assert len({len(r.history) for r in singles}) > 1, "the seeds must stop at different epochs for this test"
    for result, single in zip(grouped, singles):
        assert len(result.history) == len(single.history)
        assert_same(result, single, model, data[1], data[2])


def test_a_diverging_member_fails_alone(model):
    data = dataset(0)
    train, val, consts = data
    bad = consts._replace(table=consts.table.at[5].set(np.inf))  # ids 5 occur: the loss is NaN at once
    results = fit_group(
        model.forward, optimizer(2),
        [Member(train, val, consts, jax.random.PRNGKey(0), hyper(ADAM, 0.2)),
         Member(train, val, bad, jax.random.PRNGKey(1), hyper(ADAM, 0.2))],
        epochs=2, early_stopping_patience=None, **SETTINGS,
    )  # fmt: skip
    assert isinstance(results[1], Failed) and "diverged" in str(results[1].error) and results[1].history == ()
    assert_same(results[0], alone(model, data, 0), model, val, consts)


def test_programs_split_by_shape_and_size():
    small, other = dataset(0), dataset(1)
    wide = ((np.zeros((250, T + 1), np.int32), small[0][1]), small[1], small[2])
    members = [Member(*d, jax.random.PRNGKey(0), hyper(ADAM, 0.0)) for d in (small, wide, other, small, other)]
    assert programs(members) == [[0, 2, 3, 4], [1]]
    assert programs(members, max_size=3) == [[0, 2, 3], [4], [1]]
