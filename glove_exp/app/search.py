"""The Optuna search behind ``glove-exp -m hparams_search=optuna`` (the Hydra plugin in
``hydra_plugins/glove_exp_optuna_sweeper`` hands its work here): ask a batch of trials, launch each
trial's jobs (one per seed) through Hydra's launcher, tell Optuna each trial's outcome. The study lives
in an RDB storage, so the same command again continues it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from glove_exp.app.trial import PRUNED_ATTR, SEED_INDEX_ENV, TRIAL_ENV, open_storage
from glove_exp.io.console import counted, say

SQLITE_FILE = re.compile(r"^sqlite:///(?P<path>[^?]+)(\?.*)?$")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # what n_trials counts; FAIL trials are run again


class SearchError(HydraException):
    """A search that cannot start (its storage, its study): one line, exit 2, nothing written."""


@dataclass(frozen=True)
class SearchSettings:
    """``hydra.sweeper``, its storage and study name filled in."""

    direction: str
    study_name: str
    storage: str
    n_trials: int
    n_jobs: int
    sampler: DictConfig | None  # instantiated once the study's trials are counted
    pruner: optuna.pruners.BasePruner
    params: dict[str, str]


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of a sweep override: ``choice(...)``, ``range(start, stop[, step])``
    (stop excluded, as in Hydra), ``interval(low, high)`` and ``tag(log, interval(...))`` (floats)."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep) and not value.shuffle:
        start, stop, step = value.start, value.stop, value.step
        last = start + math.floor((stop - start) / step - 1e-12) * step  # the last value before stop
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(start), int(last), step=int(step))
        return FloatDistribution(float(start), float(last), step=float(step))
    if isinstance(value, IntervalSweep):  # Hydra's intervals are float: range(...) is for integers
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    raise SearchError(f"hydra.sweeper.params: {override.input_line} is not choice, range or interval")


def search_space(params: dict[str, str], arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions of ``params`` and of the command line's sweep overrides, and the command line's
    other overrides (a value given there wins over a param of the same key)."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(arguments))
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())


def default_storage(tracking_uri: str, cwd: str) -> str:
    """``optuna.db`` beside a SQLite tracking store, else in ``cwd``."""
    found = SQLITE_FILE.match(tracking_uri)
    folder = Path(cwd, found["path"]).parent if found else Path(cwd)
    return f"sqlite:///{folder.absolute()}/optuna.db"


def settings(options: dict[str, Any], config: DictConfig) -> SearchSettings:
    """The sweeper's ``options`` as settings; the storage defaults to
    :func:`default_storage`, the study name to the experiment's name (``config``: the composed config)."""
    from hydra.core.hydra_config import HydraConfig

    from glove_exp.app.schema import register

    register()  # tracking.uri's resolver, in a process that may not have run glove-exp's main()
    HydraConfig.instance().set_config(config)  # and its ${hydra:runtime.cwd}: Hydra sets it per job only
    storage = options["storage"] or default_storage(config.tracking.uri, config.hydra.runtime.cwd)
    params = options["params"] or {}
    return SearchSettings(
        direction=options["direction"], study_name=options["study_name"] or config.tracking.experiment,
        storage=storage, n_trials=options["n_trials"], n_jobs=options["n_jobs"], sampler=options["sampler"],
        pruner=instantiate(options["pruner"]) if options["pruner"] else optuna.pruners.NopPruner(), params={str(k): str(v) for k, v in params.items()},
    )  # fmt: skip


def open_study(s: SearchSettings) -> optuna.Study:
    """The study, created or loaded; :class:`SearchError` when the storage cannot be opened."""
    try:
        storage = open_storage(s.storage)
    except Exception as err:  # each database driver raises its own errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SearchError(f"cannot open the Optuna storage {s.storage}: {first}") from None
    study = optuna.create_study(
        storage=storage, pruner=s.pruner, study_name=s.study_name, direction=s.direction, load_if_exists=True
    )
    if study.direction.name.lower() != s.direction.lower():  # a loaded study keeps its own
        raise SearchError(
            f"study {s.study_name!r} in {s.storage} is to {study.direction.name.lower()}, not {s.direction}: "
            "set hydra.sweeper.study_name to start a new study"
        )
    if s.sampler:
        study.sampler = sampler(s.sampler, len(study.get_trials(deepcopy=False)))
    return study


def sampler(config: DictConfig, trials: int) -> optuna.samplers.BaseSampler:
    """The sampler, its seed moved on by the study's ``trials`` so far: a continued study draws new values
    (the same seed would propose its first trials again), reproducibly."""
    seed = config.get("seed")
    return instantiate(config) if seed is None else instantiate(config, seed=seed + trials)


def check_space(study: optuna.Study, space: dict[str, BaseDistribution], storage: str) -> None:
    """:class:`SearchError` if a stored trial of the study used another search space."""
    for trial in study.get_trials(deepcopy=False):
        if trial.distributions and trial.distributions != space:
            differ = sorted(set(trial.distributions) ^ set(space)) or sorted(
                key for key in space if trial.distributions[key] != space[key]
            )
            raise SearchError(
                f"study {study.study_name!r} in {storage} has trials of another search space (differs in "
                f"{', '.join(differ)}): set hydra.sweeper.study_name to start a new study"
            )


def fail_stale_trials(study: optuna.Study) -> int:
    """Tell FAIL the trials a killed sweep left RUNNING (one sweep per study at a time); returns how many."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
    return len(stale)


def quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value (URLs hold ``:``, ``?`` and ``=``)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trial_jobs(trial: optuna.Trial, fixed: list[str], s: SearchSettings, seeds: int, base_seed: int) -> list[list[str]]:
    """The overrides of the trial's jobs, one per seed; ``env_set`` names the trial to the job."""
    task = [*fixed, *(f"{key}={value}" for key, value in trial.params.items())]
    hydra = [
        f"hydra.sweeper.storage={quoted(s.storage)}", f"hydra.sweeper.study_name={quoted(s.study_name)}",
        f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
    ]  # fmt: skip
    if seeds == 1:
        return [task + hydra]
    return [
        [*task, f"trainer.seed={base_seed + k}", *hydra, f"++hydra.job.env_set.{SEED_INDEX_ENV}={k}"]
        for k in range(seeds)
    ]


def job_value(ret: JobReturn) -> float:
    """A job's validation accuracy; NaN when it failed (glove-exp's jobs return NaN then)."""
    if ret.status != JobStatus.COMPLETED or ret.return_value is None:
        return math.nan
    return float(ret.return_value)


def tell(study: optuna.Study, trial: optuna.trial.FrozenTrial, returns: Sequence[JobReturn]) -> TrialState:
    """PRUNED if its reporting job was pruned, FAIL if a job failed, else COMPLETE with the jobs' mean
    (``trial``: as stored after its jobs, with the user attributes they set)."""
    values = [job_value(ret) for ret in returns]
    if trial.user_attrs.get(PRUNED_ATTR):
        state, value = TrialState.PRUNED, None
    elif any(math.isnan(v) for v in values):
        state, value = TrialState.FAIL, None
    else:
        state, value = TrialState.COMPLETE, sum(values) / len(values)
    study.tell(trial.number, value, state=state)
    return state


def open_search(
    options: dict[str, Any], config: DictConfig, arguments: Sequence[str]
) -> tuple[SearchSettings, dict[str, BaseDistribution], list[str], optuna.Study]:
    """The settings, search space, fixed overrides and study, checked: :class:`SearchError` if the
    storage cannot be opened or the study holds another search space."""
    s = settings(options, config)
    space, fixed = search_space(s.params, arguments)
    if config.hparams_search.seeds < 1:
        raise SearchError(f"hparams_search.seeds must be >= 1, got {config.hparams_search.seeds}")
    study = open_study(s)
    check_space(study, space, s.storage)
    return s, space, fixed, study


def check_search(config: DictConfig) -> None:
    """:func:`open_search`'s checks for the sweep's callback, before it writes anything (its parent run)."""
    options = {str(key): value for key, value in config.hydra.sweeper.items() if not str(key).startswith("_")}
    open_search(options, config, [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task)])


def run_search(options: dict[str, Any], config: DictConfig, launcher: Any, arguments: Sequence[str]) -> None:
    """The whole search: up to ``n_trials`` COMPLETE or PRUNED trials in the study, in batches of ``n_jobs``."""
    s, space, fixed, study = open_search(options, config, arguments)
    seeds, base_seed = config.hparams_search.seeds, config.trainer.seed
    if stale := fail_stale_trials(study):
        say(f"optuna: {stale} trial(s) left running by an earlier sweep told FAIL")
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    job_idx, to_go = 0, s.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    while to_go > 0:  # failed trials are not counted, but run again only by the next sweep
        trials = [study.ask(space) for _ in range(min(s.n_jobs, to_go))]
        to_go -= len(trials)
        jobs = [trial_jobs(trial, fixed, s, seeds, base_seed) for trial in trials]
        returns = launcher.launch([job for per_trial in jobs for job in per_trial], initial_job_idx=job_idx)
        job_idx += len(returns)
        stored = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for i, trial in enumerate(trials):
            tell(study, stored[trial.number], returns[i * seeds : (i + 1) * seeds])
    say(summary(study, s.storage))


def summary(study: optuna.Study, storage: str) -> str:
    """One line per study: its trials by state and its best trial."""
    trials = study.get_trials(deepcopy=False)
    states = {state: sum(t.state == state for t in trials) for state in (*COUNTED, TrialState.FAIL)}
    counts = ", ".join(f"{n} {state.name.lower()}" for state, n in states.items() if n)
    line = f"optuna: study {study.study_name!r} in {storage}: {counted(len(trials), 'trial')} ({counts})"
    if states[TrialState.COMPLETE]:
        best = study.best_trial
        params = " ".join(f"{key}={value}" for key, value in best.params.items())
        line += f"; best trial {best.number}: {best.value:.4f} ({params})"
    return line
