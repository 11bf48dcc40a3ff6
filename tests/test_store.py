"""A new SQLite store is a copy of an empty one made once per MLflow version under the cache dir, and is
the store MLflow itself would have made in the same working folder."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import mlflow
import pytest

from glove_exp.app import store
from glove_exp.app.store import Store

TIMES = {"creation_time", "last_update_time"}


def clauses(sql: str) -> list[str]:
    """A table's columns and constraints, sorted: MLflow's migrations write the constraints of a table
    they rebuild in an order that varies from process to process."""
    return sorted(line.strip().rstrip(",") for line in sql.splitlines())


def contents(path: Path) -> dict[str, object]:
    """Every table's schema and rows (without the times they were made at)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"))
        found: dict[str, object] = {}
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}"')
            names = [column[0] for column in rows.description]
            found[table] = (clauses(tables[table]), sorted(
                repr({k: v for k, v in zip(names, row) if k not in TIMES}) for row in rows
            ))  # fmt: skip
    return found


def test_a_store_copied_from_the_template_is_the_store_mlflow_makes_in_its_working_folder(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.chdir(tmp_path.joinpath("maker").mkdir() or tmp_path / "maker")  # where the template is made
    template = store.store_template(cache)
    assert template is not None and template.is_relative_to(cache)
    monkeypatch.chdir(tmp_path.joinpath("user").mkdir() or tmp_path / "user")
    Store.open(f"sqlite:///{tmp_path}/copied/mlflow.db", "glove-exp", cache)
    Store.open(f"sqlite:///{tmp_path}/direct/mlflow.db", "glove-exp")

    copied, direct = contents(tmp_path / "copied" / "mlflow.db"), contents(tmp_path / "direct" / "mlflow.db")
    assert copied.keys() == direct.keys() and "alembic_version" in copied
    for table in direct:  # the experiments' artifact locations differ by the folder of each store
        if table != "experiments":
            assert copied[table] == direct[table], table
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/copied/mlflow.db")
    default = client.get_experiment("0")
    assert default.name == "Default" and default.lifecycle_stage == "active"
    assert (
        default.artifact_location
        == mlflow.MlflowClient(f"sqlite:///{tmp_path}/direct/mlflow.db").get_experiment("0").artifact_location
    )
    assert Path(default.artifact_location).parent == tmp_path / "user" / "mlruns"  # not the template's maker's
    glove = client.get_experiment_by_name("glove-exp")
    assert glove.artifact_location == (tmp_path / "copied" / "mlartifacts").as_uri()


def test_the_template_is_made_once_per_mlflow_version_and_holds_no_experiment(tmp_path, monkeypatch):
    made = []
    real = store.without_experiments
    monkeypatch.setattr(store, "without_experiments", lambda path: made.append(path) or real(path))
    for name in ("a", "b", "c"):
        Store.open(f"sqlite:///{tmp_path}/{name}/mlflow.db", "glove-exp", tmp_path / "cache")
    assert len(made) == 1
    (template,) = (tmp_path / "cache" / "mlflow").glob("*.db")
    assert template.name == f"empty-store-{mlflow.__version__}.db"
    with contextlib.closing(sqlite3.connect(template)) as db:
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    monkeypatch.setattr(mlflow, "__version__", "0.0.0-next")
    Store.open(f"sqlite:///{tmp_path}/d/mlflow.db", "glove-exp", tmp_path / "cache")
    assert len(made) == 2 and (tmp_path / "cache" / "mlflow" / "empty-store-0.0.0-next.db").exists()


@pytest.mark.parametrize("cache", ["a_file", "a_folder_under_a_file"])
def test_a_cache_dir_that_cannot_hold_the_template_makes_the_store_from_scratch(tmp_path, cache):
    (tmp_path / "plain").write_text("x")
    cache_dir = tmp_path / "plain" if cache == "a_file" else tmp_path / "plain" / "cache"
    assert store.store_template(cache_dir) is None
    opened = Store.open(f"sqlite:///{tmp_path}/new/mlflow.db", "glove-exp", cache_dir)
    assert opened.client.get_experiment_by_name("glove-exp").experiment_id == opened.experiment_id
    assert not list(tmp_path.glob("new/*.tmp"))


def test_an_interrupted_template_leaves_none_and_the_next_store_makes_it(tmp_path, monkeypatch):
    def interrupted(path):
        store.open_tables(path)
        raise KeyboardInterrupt("signal 2")

    real = store.without_experiments
    monkeypatch.setattr(store, "without_experiments", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Store.open(f"sqlite:///{tmp_path}/a/mlflow.db", "glove-exp", tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache" / "mlflow").iterdir() if p.suffix != ".lock"]  # no template, no .tmp
    assert not (tmp_path / "a" / "mlflow.db").exists()
    monkeypatch.setattr(store, "without_experiments", real)
    assert Store.open(f"sqlite:///{tmp_path}/a/mlflow.db", "glove-exp", tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "mlflow").glob("*.db"))) == 1


def test_a_damaged_template_is_made_again_and_the_store_from_scratch(tmp_path, caplog):
    template = store.store_template(tmp_path / "cache")
    template.write_bytes(b"not a database" * 100)
    opened = Store.open(f"sqlite:///{tmp_path}/a/mlflow.db", "glove-exp", tmp_path / "cache")
    assert opened.client.get_experiment_by_name("glove-exp").experiment_id == opened.experiment_id
    assert f"the empty store {template} is unusable" in caplog.text and not list(tmp_path.glob("a/*.tmp"))
    assert not template.exists()
    Store.open(f"sqlite:///{tmp_path}/b/mlflow.db", "glove-exp", tmp_path / "cache")  # a new template, copied
    with contextlib.closing(sqlite3.connect(template)) as db:
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
