"""A sweep's parent run: opened as the sweep starts, found again by a resumed sweep (same overrides, same
experiment), named for the runs table (``pooling x seed 00:28``). Its id reaches the jobs, wherever
they run, through ``<sweep dir>/parent_run.json``, as their outcomes come back through ``jobs.jsonl``."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mlflow.entities import RunStatus, RunTag
from mlflow.tracking.context.registry import resolve_tags

from glove_exp.app.identity import ROLE_TAG, SWEEP_DIRS_TAG, SWEEP_KEY_TAG, digest
from glove_exp.app.store import Store

PARENT_FILE = "parent_run.json"
SWEEP_ROLE = "sweep"
SWEEP_DIRS_CHARS = 6000  # the folders a parent remembers, newest kept (MLflow takes tag values up to 8,000)


def sweep_key(experiment_id: str, overrides: Sequence[str]) -> str:
    """The same for the same command line (in any order) in the same experiment."""
    return digest({"experiment": experiment_id, "overrides": sorted(overrides)})


def parent_name(swept: Sequence[str], started: datetime) -> str:
    """The swept keys' last parts and the start time, short enough for the runs table's name column."""
    keys = list(dict.fromkeys(key.rsplit(".", 1)[-1] for key in swept)) or ["sweep"]
    return f"{' x '.join(keys)} {started:%H:%M}"


def open_parent(store: Store, key: str, name: str, tags: dict[str, str]) -> str:
    """The id of the RUNNING parent run with sweep key ``key``: the one a previous sweep of the same
    command left (running again, its ``sweep_id`` now this sweep's folder, the earlier ones remembered),
    else a new one."""
    client = store.client
    found = client.search_runs(
        [store.experiment_id], f"tags.`{SWEEP_KEY_TAG}` = '{key}'", max_results=1, order_by=["attributes.start_time"]
    )
    dirs = {SWEEP_DIRS_TAG: remembered(sweep_dirs(found[0].data.tags) if found else [], tags["sweep_id"])}
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        client.log_batch(run_id, tags=[RunTag(tag, value) for tag, value in (tags | process_tags() | dirs).items()])
        return run_id
    all_tags = tags | process_tags() | dirs | {ROLE_TAG: SWEEP_ROLE, SWEEP_KEY_TAG: key}
    return client.create_run(store.experiment_id, run_name=name, tags=resolve_tags(all_tags)).info.run_id


def sweep_dirs(tags: dict[str, str]) -> list[str]:
    """The sweep folders a parent ran in, oldest first (a parent from before they were kept: its last)."""
    if SWEEP_DIRS_TAG in tags:
        return json.loads(tags[SWEEP_DIRS_TAG])
    return [tags["sweep_id"]] if tags.get("sweep_id") else []


def remembered(dirs: Sequence[str], new: str) -> str:
    """:data:`SWEEP_DIRS_TAG`'s value: ``dirs`` then ``new`` (last), the oldest left out beyond
    :data:`SWEEP_DIRS_CHARS`."""
    kept = [*(d for d in dirs if d != new), new]
    while len(kept) > 1 and len(json.dumps(kept)) > SWEEP_DIRS_CHARS:
        kept.pop(0)
    return json.dumps(kept)


def process_tags() -> dict[str, str]:
    """Whose run it is now: a parent left RUNNING by a dead sweep ends KILLED (Store.end_dead_runs)."""
    return {"pid": str(os.getpid()), "host": socket.gethostname()}


def end_parent(store: Store, run_id: str, status: RunStatus | int) -> None:
    store.client.set_terminated(run_id, RunStatus.to_string(status))


def write_parent(sweep_dir: str, store: Store, run_id: str) -> None:
    path = Path(sweep_dir) / PARENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, "tracking_uri": store.uri, "experiment_id": store.experiment_id}
    path.write_text(json.dumps(record), encoding="utf-8")


def read_parent(sweep_dir: str, tracking_uri: str) -> str | None:
    """The parent run id the sweep wrote for its jobs, if the job tracks into the same store."""
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record["run_id"] if record["tracking_uri"] == tracking_uri else None
