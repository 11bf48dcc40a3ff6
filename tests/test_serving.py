"""The logged model's input contract: texts score, anything else is refused with one clear error, in
process (``mlflow.pyfunc.load_model``) and served (``mlflow models serve``: HTTP 400)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from glove_exp.app import pipeline
from glove_exp.app.serving import ACCEPTED_INPUT, texts_from_input
from tests.conftest import CLASSES, experiment_runs, model_server, store_uri, tiny_config

TEXTS = ["Stocks rallied as oil prices fell", "The team won the cup"]
GOOD_INPUTS = {
    "list": TEXTS,
    "tuple": tuple(TEXTS),
    "array": np.array(TEXTS),
    "series": pd.Series(TEXTS),
    "text column": pd.DataFrame({"text": TEXTS}),
    "pandas' column of a list": pd.DataFrame(TEXTS),
}
BAD_INPUTS = {
    "another column": (pd.DataFrame({"body": TEXTS}), r"got a DataFrame with columns \['body'\]"),
    "a second column": (pd.DataFrame({"text": TEXTS, "x": TEXTS}), r"columns \['text', 'x'\]"),
    "list of lists": ([["a", "b"], ["c"]], r"text 0 is list \['a', 'b'\]"),
    "2-d array": (np.array([["a"], ["b"]]), r"got a 2-d array of shape \(2, 1\)"),
    "dict": ({"text": TEXTS}, r"got dict \{'text'"),
    "a number": (5, "got int 5"),
    "numbers": ([1, 2], "text 0 is int 1"),
    "a None": (["a", None], "text 1 is NoneType None"),
    "a NaN": (pd.Series(["a", np.nan]), "text 1 is float nan"),
    "numbers in the text column": (pd.DataFrame({"text": [1, 2]}), "text 0 is int 1"),
    "str(list)": (str(TEXTS), "text 0 is str .*a Python list written as a string: pass the list"),
    "str(list) in a list": (["fine", str(["a"])], "text 1 is str"),
}


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory, tiny_data):
    """A tiny run's logged model, loaded back from its store, and its store folder."""
    store = tmp_path_factory.mktemp("serving")
    pipeline.run(tiny_config(tiny_data, store, "explain.num_examples=0", "trainer.epochs=1"))
    [run] = experiment_runs(store)
    mlflow.set_tracking_uri(store_uri(store))
    try:
        yield mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model"), store, run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("model_input", GOOD_INPUTS.values(), ids=GOOD_INPUTS)
def test_texts_score_one_row_of_probabilities_each(model_input, logged_model):
    model, _, _ = logged_model
    scores = model.predict(model_input)
    assert list(scores.columns) == CLASSES
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(scores.to_numpy(), model.predict(TEXTS).to_numpy())


def test_one_string_is_one_text_and_no_texts_no_rows(logged_model):
    model, _, _ = logged_model
    np.testing.assert_array_equal(model.predict(TEXTS[0]).to_numpy(), model.predict(TEXTS[:1]).to_numpy())
    assert model.predict([]).shape == (0, len(CLASSES))


@pytest.mark.parametrize(("model_input", "problem"), BAD_INPUTS.values(), ids=BAD_INPUTS)
def test_input_that_is_not_texts_is_refused_saying_what_the_model_takes(model_input, problem, logged_model):
    model, _, _ = logged_model
    with pytest.raises(MlflowException, match=problem) as err:
        model.predict(model_input)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert str(err.value).startswith(ACCEPTED_INPUT)


@pytest.mark.parametrize("text", ["[Reuters] Oil rose", "[1, 2]", "['a', 'b'] said the report", "[unclosed"])
def test_brackets_in_a_document_are_text(text):
    assert texts_from_input([text]) == [text]


def test_the_signature_has_outputs_only_so_the_model_sees_its_input_as_given(logged_model):
    """An input schema would let MLflow reshape input first (a list of lists to its first column)."""
    model, _, _ = logged_model
    assert model.metadata.get_input_schema() is None
    assert model.metadata.get_output_schema().input_names() == CLASSES


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


SERVED_BAD_BODIES = {
    "inputs: a number": ({"inputs": 5}, "got int 5"),
    "inputs: numbers": ({"inputs": [1, 2]}, "text 0 is int64 1"),
    "inputs: a list of lists": ({"inputs": [["a", "b"], ["c", "d"]]}, r"got a 2-d array of shape \(2, 2\)"),
    "inputs: an object": ({"inputs": {"text": ["a"]}}, "got dict"),
    "inputs: str(list)": ({"inputs": str(TEXTS)}, "a Python list written as a string"),
    "records: another column": ({"dataframe_records": [{"body": "a"}]}, r"columns \['body'\]"),
    "split: other columns": (
        {"dataframe_split": {"columns": ["text", "x"], "data": [["a", "b"]]}},
        r"columns \['text', 'x'\]",
    ),
    "records: a null text": ({"dataframe_records": [{"text": None}]}, "text 0 is NoneType None"),
}
SERVED_GOOD_BODIES = [
    {"inputs": TEXTS},
    {"dataframe_records": [{"text": text} for text in TEXTS]},
    {"dataframe_split": {"columns": ["text"], "data": [[text] for text in TEXTS]}},
]


@pytest.mark.slow
def test_the_served_model_answers_400_to_input_that_is_not_texts(logged_model):
    model, store, run_id = logged_model
    expected = model.predict(TEXTS).to_numpy()
    with model_server(store, f"runs:/{run_id}/model", store_uri(store)) as url:
        for body in SERVED_GOOD_BODIES:
            status, answer = post(url, body)
            assert status == 200, answer
            np.testing.assert_allclose(pd.DataFrame(answer["predictions"])[CLASSES], expected, rtol=1e-6)
        for name, (body, problem) in SERVED_BAD_BODIES.items():
            status, answer = post(url, body)
            assert (status, answer["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), name
            assert ACCEPTED_INPUT in answer["message"], name
            assert re.search(problem, answer["message"]), name
