"""Test-set metrics: the classification report and confusion matrix equal scikit-learn's, which runs no
longer import."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import classification_report, confusion_matrix

from glove_exp.core.evaluate import SUMMARY_ROWS, evaluate

# [N] true and predicted class ids of C classes, some classes absent from either or both
CASES = st.integers(1, 25).flatmap(
    lambda classes: st.tuples(
        st.just(classes),
        st.lists(st.tuples(st.integers(0, classes - 1), st.integers(0, classes - 1)), min_size=1, max_size=300),
        st.lists(
            st.text(min_size=1, max_size=14).filter(lambda name: name not in SUMMARY_ROWS),  # the schema's rule
            min_size=classes,
            max_size=classes,
            unique=True,
        ),  # fmt: skip
    )
)


def scikit_learn(labels, predicted, names, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "a single label was found", of one-class cases
        if not kw:
            return confusion_matrix(labels, predicted, labels=range(len(names)))
        return classification_report(
            labels, predicted, labels=range(len(names)), target_names=names, digits=4, zero_division=0, **kw
        )


@settings(max_examples=400, deadline=None)
@given(CASES)
def test_the_report_and_confusion_matrix_are_scikit_learns(case):
    _, pairs, names = case
    labels, predicted = np.array(pairs).T
    evaluation = evaluate(labels, predicted, names)
    report = scikit_learn(labels, predicted, names, output_dict=True)
    assert evaluation.report == report
    assert list(evaluation.report) == list(report)  # the JSON artifact's order too
    np.testing.assert_array_equal(evaluation.confusion, scikit_learn(labels, predicted, names))
    assert evaluation.confusion.dtype == np.int64
    assert evaluation.accuracy == report["accuracy"] == np.mean(labels == predicted)
    assert evaluation.macro_f1 == report["macro avg"]["f1-score"]
    assert evaluation.per_class_f1 == {name: report[name]["f1-score"] for name in names}
    if (labels == predicted).any():  # with none right, scikit-learn writes the supports as floats (1.0)
        assert evaluation.report_text == scikit_learn(labels, predicted, names, output_dict=False)


def test_the_text_report_reads_as_scikit_learns():
    evaluation = evaluate(np.array([0, 1, 2, 2, 1, 0, 3]), np.array([0, 2, 2, 2, 1, 1, 3]), ["World", "Sports", "Business", "Sci/Tech"])  # fmt: skip
    assert evaluation.report_text == (
        "              precision    recall  f1-score   support\n"
        "\n"
        "       World     1.0000    0.5000    0.6667         2\n"
        "      Sports     0.5000    0.5000    0.5000         2\n"
        "    Business     0.6667    1.0000    0.8000         2\n"
        "    Sci/Tech     1.0000    1.0000    1.0000         1\n"
        "\n"
        "    accuracy                         0.7143         7\n"
        "   macro avg     0.7917    0.7500    0.7417         7\n"
        "weighted avg     0.7619    0.7143    0.7048         7\n"
    )


@pytest.mark.parametrize("absent", ["true", "predicted", "both"])
def test_a_class_absent_scores_zero_without_dividing_by_zero(absent):
    labels, predicted = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    if absent in ("predicted", "both"):
        predicted = np.where(predicted == 0, 1, predicted)
    if absent in ("true", "both"):
        labels = np.where(labels == 0, 1, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = evaluate(labels, predicted, ["a", "b"]).report
    assert report["a"]["f1-score"] == 0.0 and report["b"]["support"] == float((labels == 1).sum())
