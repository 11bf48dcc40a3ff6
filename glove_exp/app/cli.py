"""The ``glove-exp`` console script: user mistakes are one line and exit 2; a sweep's failed job is
recorded while the others go on (exit 1); a signal is one line and exit 128 + its number."""

from __future__ import annotations

import gc
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glove_exp.app.interrupts import Interrupts, ignore_signals, interrupted_message, signal_number
from glove_exp.app.session import Session, end_start_up, pause_collector
from glove_exp.core.errors import GloveExpError
from glove_exp.io.console import quiet_environment, say

PROG = "glove-exp"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # glove_exp/
# conf/ lies inside the package in a wheel (pyproject.toml maps it there), beside it in a checkout
CONFIG_PATH = str(PACKAGE_DIR / "conf" if (PACKAGE_DIR / "conf").is_dir() else PACKAGE_DIR.parent / "conf")
log = logging.getLogger("glove_exp")


def one_line(err: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line: the first line of the
    error and of its cause, and the available options of a missing group option."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(err, OverrideParseException):
        return unparsable(err.override, err.message)
    firsts = [
        str(e).strip().splitlines()[0].rstrip(".:") for e in (err, err.__cause__) if e is not None and str(e).strip()
    ]
    if isinstance(err, MissingConfigException) and err.options:
        firsts.append(f"available options: {', '.join(err.options)}")
    # the Ray plugin's own config, which ray_cluster builds on, is absent without the extra
    if any("Could not load 'hydra/launcher/ray'" in first for first in firsts):
        firsts.append(
            'the Ray launcher is an extra: pip install "glove-exp[ray]" (in a checkout: pip install -e ".[ray]")'
        )
    return "; ".join(firsts) or type(err).__name__


LEXER_ERROR = "LexerNoViableAltException: "  # Hydra's prefix, with a caret under the character on a line below


def unparsable(override: str, message: str) -> str:
    """Hydra's message for an override its grammar rejects, in plain words: which one, where, and the fix."""
    at, problem = parse_problem(override, message)
    where = f" at character {at + 1} ({override[at]!r})" if at is not None and at < len(override) else ""
    where = " at its end" if at == len(override) else where
    return f"cannot parse override {override!r}{where}: {problem}; {parse_fix(override, at)}"


def parse_problem(override: str, message: str) -> tuple[int | None, str]:
    """Where (0-based; ``len(override)``: at its end; None: unknown) and what the grammar rejected."""
    lines = [line for line in message.splitlines() if line.strip() and not line.startswith(("See ", "Error parsing"))]
    carets = [line for line in lines if line.strip() == "^"]
    if lines[0].startswith(LEXER_ERROR) and carets:
        at = carets[0].index("^") - len(LEXER_ERROR)
        printable = 0 <= at < len(override) and override[at].isprintable()
        return (
            at,
            "a character the grammar takes only inside quotes" if printable else "a line break or control character",
        )
    problem = re.sub(r" expecting \{.*\}$", "", lines[0])  # drop the list of every token the grammar could take
    token = re.search(r"input '(.*?)'", problem)
    if token is None:
        return None, problem
    if token[1] == "<EOF>":
        return len(override), "it stops short"
    at = override.find(token[1], override.find("=") + 1)
    return (at if at >= 0 else None), problem


def parse_fix(override: str, at: int | None) -> str:
    """What to type instead."""
    key, equals, value = override.partition("=")
    if not equals:
        return "write key=value (or group=option)"
    if at is not None and at < len(key):
        return "check the key (glove-exp --cfg job lists them)"
    if not value.isprintable():
        return "remove the line break or control character"
    if at == len(override) and value.endswith(","):  # a sweep's list cut short, more often than a comma in a value
        return f"drop the last comma ({key}={value.rstrip(',')}), add the next value, or quote it: {key}='{value}'"
    if at == len(override):
        return f"complete the value, or quote it: {key}='{value}'"
    quote = '"' if "'" in value else "'"
    return f"quote values with spaces, brackets or non-ASCII characters: {key}={quote}{value}{quote}"


def run_job(cfg: Any, session: Session) -> float | None:
    """One Hydra job; returns the validation accuracy, the objective of sweepers such as Optuna."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from glove_exp.app.schema import register, to_config

    quiet_environment(sys.stderr.isatty())  # again: a Ray worker runs jobs without main()
    register()  # and resolves the config without the resolvers main() registered
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:  # exit here: Hydra would print its own line about the failed job first
            return _run(to_config(cfg), hydra_cfg, session, sweep_dir=None).val_accuracy
        except GloveExpError as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            sys.exit(err.exit_status)

    from glove_exp.app.identity import RunPruned
    from glove_exp.app.sweep import record_job

    outcome: dict[str, Any] = {"num": hydra_cfg.job.num, "overrides": task_overrides(hydra_cfg)}
    try:
        result = _run(to_config(cfg), hydra_cfg, session, sweep_dir=hydra_cfg.sweep.dir)
        outcome.update(
            status="SKIPPED" if result.skipped else "FINISHED", val_accuracy=result.val_accuracy,
            test_accuracy=result.test_accuracy, run_id=result.run_id,
        )  # fmt: skip
        return result.val_accuracy
    except KeyboardInterrupt:  # the MLflow run ended KILLED; stop the sweep too
        outcome.update(status="KILLED", error="interrupted")
        raise
    except RunPruned as err:  # the MLflow run ended KILLED, tagged pruned; the sweeper tells Optuna
        outcome.update(status="PRUNED", error=str(err))
    except GloveExpError as err:
        log.error("%s", err)  # the job's log; the sweep summary repeats it
        outcome.update(status="FAILED", error=str(err))
    except Exception as err:  # a bug: keep the traceback in the job's log
        log.error("job failed:\n%s", traceback.format_exc())
        outcome.update(status="FAILED", error=f"{type(err).__name__}: {err}")
    finally:
        record_job(hydra_cfg.sweep.dir, outcome)
    return math.nan


def _run(config: Any, hydra_cfg: Any, session: Session, sweep_dir: str | None) -> Any:
    if config.dataset.data_dir is None:  # offline: say so in seconds, before MLflow and datasets load
        from glove_exp.io.datasets import check_hub_reachable

        check_hub_reachable(config.dataset.hub_id)
    from glove_exp.app.identity import RunPruned, config_id
    from glove_exp.app.parent import read_parent
    from glove_exp.app.pipeline import run  # after validation: bad configs fail before heavy imports
    from glove_exp.app.tracking import JobInfo, run_name

    search = sweep_dir is not None and is_search(hydra_cfg.sweeper)
    trial, on_epoch = None, None
    if search:
        from glove_exp.app.trial import trial_number, trial_reporter

        trial, on_epoch = trial_number(), trial_reporter(hydra_cfg.sweeper)
    job = JobInfo(
        name=hydra_cfg.job.name, num=hydra_cfg.job.num if sweep_dir else None, sweep_id=sweep_dir,
        overrides=tuple(task_overrides(hydra_cfg)), preset=hydra_cfg.runtime.choices.get("experiment"),
        varying=varying_keys(session, sweep_dir) if sweep_dir and not search else (), trial=trial,
        output_dir=hydra_cfg.runtime.output_dir if sweep_dir else None,
        parent_run_id=read_parent(sweep_dir, config.tracking.uri) if sweep_dir else None,
    )  # fmt: skip
    trained = session.take(config_id(config))
    try:
        result = run(
            config, job, session.interrupts, progress=session.progress, on_epoch=on_epoch, trained=trained,
            shared=session.shared,
        )  # fmt: skip
    except RunPruned as err:  # a line as a finished run's, not silence
        say(f"{PROG}: {run_name(config, job)}: {err}")
        raise
    say(f"{PROG}: {result.summary}")  # a closed stdout must not fail a trained job
    return result


def task_overrides(hydra_cfg: Any) -> list[str]:
    """The job's command-line overrides as typed (``${oc.env:...}`` unresolved: it may fail)."""
    from omegaconf import OmegaConf

    return list(OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False))


def varying_keys(session: Session, sweep_dir: str) -> tuple[str, ...]:
    """:func:`sweep_keys`, read once per sweep by the process that runs its jobs."""
    if sweep_dir not in session.swept:
        session.swept[sweep_dir] = sweep_keys(sweep_dir)
    return session.swept[sweep_dir]


def sweep_keys(sweep_dir: str) -> tuple[str, ...]:
    """The keys a sweep varies, from the ``multirun.yaml`` Hydra saves in the sweep folder before it
    launches the jobs."""
    from omegaconf import OmegaConf

    saved = Path(sweep_dir) / "multirun.yaml"
    return swept(task_overrides(OmegaConf.load(saved).hydra)) if saved.is_file() else ()


def swept(overrides: list[str]) -> tuple[str, ...]:
    """The keys of the sweeping ``overrides`` (``model.pooling=mean,max``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return tuple(o.key_or_group for o in parsed if o.is_sweep_override())


def is_search(sweeper: Any) -> bool:
    """Whether ``hydra.sweeper`` is the Optuna search's."""
    return "optuna" in str(sweeper.get("_target_", ""))


def find_plugins() -> None:
    """An editable install (``pip install -e``) maps the packages through an import hook that Hydra's
    plugin scan (``pkgutil.walk_packages``) cannot list: put the checkout on the path so that the scan
    finds hydra_plugins/glove_exp_optuna_sweeper (a wheel installs it beside the other plugins)."""
    root = str(PACKAGE_DIR.parent)
    if (PACKAGE_DIR.parent / "hydra_plugins").is_dir() and root not in sys.path:
        sys.path.append(root)


def _hydra_app(session: Session) -> Callable[[], Any]:
    import hydra

    from glove_exp.app.schema import register

    register()
    find_plugins()

    def glove_exp(cfg: Any) -> float | None:
        try:
            return run_job(cfg, session)
        finally:
            end_start_up()

    glove_exp.session = session  # type: ignore[attr-defined]  # Hydra hands this function to glove-exp's launcher
    return hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(glove_exp)


def main() -> None:
    pause_collector()
    interrupts = Interrupts(PROG).install()  # first: a Ctrl-C during the imports below is one line too
    quiet_environment(sys.stderr.isatty())
    full_errors = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors here instead of printing them
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from glove_exp.app.help import help_request, show_help
    from glove_exp.app.preview import show_request, show_sweep
    from glove_exp.app.schema import register

    # experiment and hparams_search are in the defaults list (as null), so Hydra wants them without
    # "+"; the README's older commands used "+", which would be "Multiple values for experiment".
    sys.argv = [
        arg.removeprefix("+") if arg.startswith(("+experiment=", "+hparams_search=")) else arg for arg in sys.argv
    ]
    try:
        # --help: Hydra's text without its slow listing of the config groups (glove_exp/app/help.py)
        if asked := help_request(sys.argv[1:]):
            register()
            find_plugins()
            if show_help(asked, CONFIG_PATH):
                return
        if request := show_request(sys.argv[1:]):  # --cfg/--info with -m, which Hydra refuses
            register()
            find_plugins()
            show_sweep(request, CONFIG_PATH)
            return
        _hydra_app(Session(interrupts, progress=sys.stderr.isatty()))()
    # ConnectionError: a launcher's cluster that is not there (Ray's "Could not find any running Ray instance")
    except (HydraException, OmegaConfBaseException, ConnectionError, GloveExpError) as err:
        if full_errors:
            raise
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        signum = signal_number(err)
        print(interrupted_message(PROG, signum), file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        ignore_signals()
        end_start_up()  # a run that failed before its job, and main() called in process (tests)
        # The process ends here: without this, the interpreter's last collections walk every object of
        # JAX, MLflow and pandas on the way out (1.5 s of a run's wall); atexit handlers still run.
        gc.freeze()


if __name__ == "__main__":
    main()
