"""The best model of a tracking store, in its model registry: ``models:/<tracking.model_name>@best``.

A run logs its model (``tracking.log_model=best``) only when it beats the version the alias points
to; once the run has ended FINISHED it registers that model and moves the alias, as the very last
step, so that a signal at any moment leaves the alias on a loadable version: the old best or the new."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from glove_exp.app.schema import TrackingConfig
from glove_exp.app.serving import Predictor
from glove_exp.app.store import Store
from glove_exp.app.tracking import TrackedRun

log = logging.getLogger(__name__)

ALIAS = "best"
ALIAS_TRIES = 3
VAL_TAG, TEST_TAG = "val_accuracy", "test_accuracy"  # on each registered version


@dataclass(frozen=True)
class Score:
    """What ranks runs: validation accuracy of the kept model, or test accuracy where a run has no
    validation split (then both sides compare by test accuracy)."""

    val: float | None
    test: float

    def beats(self, other: Score | None) -> bool:
        if other is None:
            return True
        if self.val is not None and other.val is not None:
            return self.val > other.val
        return self.test > other.test

    def tags(self) -> dict[str, str]:
        return {TEST_TAG: repr(self.test)} | ({} if self.val is None else {VAL_TAG: repr(self.val)})

    @classmethod
    def of(cls, version: ModelVersion) -> Score | None:
        tags = version.tags or {}
        if TEST_TAG not in tags:
            return None  # a version someone registered by hand: any scored run replaces it
        return cls(float(tags[VAL_TAG]) if VAL_TAG in tags else None, float(tags[TEST_TAG]))


def best_version(store: Store, name: str) -> ModelVersion | None:
    """The version ``name@best`` points to, or None (no such model or alias yet)."""
    try:
        return store.client.get_model_version_by_alias(name, ALIAS)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def best_score(store: Store, name: str) -> Score | None:
    version = best_version(store, name)
    return None if version is None else Score.of(version)


def register_best(store: Store, name: str, run_id: str, model_id: str, score: Score) -> str | None:
    """Register run ``run_id``'s logged model ``model_id`` as a version of ``name`` and point the alias
    at it if it still beats the current best (another job may have moved it meanwhile); returns the
    line that says so, or None when it no longer beats it."""
    client = store.client
    if not score.beats(best_score(store, name)):
        return None
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = client.get_logged_model(model_id).artifact_location  # "models:/<id>" would need the global URI
    version = client.create_model_version(name, source, run_id=run_id, tags=score.tags(), model_id=model_id)
    for attempt in range(ALIAS_TRIES):
        if not score.beats(best_score(store, name)):  # a parallel job registered a better one meanwhile
            return None
        try:
            client.set_registered_model_alias(name, ALIAS, version.version)  # the last step
            return f"best so far: registered as models:/{name}@{ALIAS} (version {version.version})"
        except MlflowException:  # a parallel job set the alias at the same moment (the store's unique key)
            if attempt == ALIAS_TRIES - 1:
                raise
    return None


def deliver_model(
    tracked: TrackedRun, predictor: Predictor, examples: list[str], tracking: TrackingConfig, name: str, score: Score
) -> str | None:
    """Log the run's model as ``tracking.log_model`` says (always; never; best: only if it beats the
    registered best); returns its model id, None when not logged."""
    if tracking.log_model == "never":
        return None
    if tracking.log_model == "best" and not score.beats(best_score(tracked.store, tracking.model_name)):
        return None
    return tracked.log_model(predictor, examples, tracking.model_name, name)
