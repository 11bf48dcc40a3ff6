"""``glove-exp --cfg job -m <sweep>``: each job's composed config, as the basic sweeper would launch it.
Hydra refuses ``--cfg`` and ``--info`` with ``-m`` (a traceback); this expands a grid sweep itself, through
Hydra's public compose and override-parser APIs, and turns what it cannot expand into one line saying
what to run instead."""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from typing import Any

from glove_exp.core.errors import ConfigError
from glove_exp.io.console import say

BASIC_SWEEPER = "BasicSweeper"  # the end of hydra.sweeper._target_ of Hydra's grid sweeper
INSTEAD = "or use --cfg job -m to list the sweep's jobs"


@dataclass(frozen=True)
class ShowRequest:
    """``--cfg``/``--info`` with ``-m``: what to show, and the overrides to show it for."""

    cfg: str | None  # job, hydra or all
    info: bool
    package: str | None
    resolve: bool
    overrides: list[str]


def show_request(argv: list[str]) -> ShowRequest | None:
    """The request when ``argv`` (without the program) combines ``-m`` with ``--cfg`` or ``--info``, else None;
    :class:`ConfigError` for flags that do not go together (:func:`check_flags`)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-m", "--multirun", action="store_true")
    parser.add_argument("-c", "--cfg")
    parser.add_argument("-p", "--package")
    parser.add_argument("--resolve", action="store_true")
    parser.add_argument("-i", "--info", nargs="?", const="all")
    for short, long in (("-r", "--run"), ("-sc", "--shell-completion"), ("-h", "--help")):
        parser.add_argument(short, long, action="store_true")
    # declared so that argparse does not read "-cn x" as "-c n"
    for short, long in (("-cp", "--config-path"), ("-cn", "--config-name"), ("-cd", "--config-dir")):
        parser.add_argument(short, long)
    args, rest = parser.parse_known_args(argv)
    check_flags(args)
    if not args.multirun or (args.cfg is None and args.info is None):
        return None
    options = [arg for arg in rest if arg.startswith("-")]
    options += [flag for flag, value in (("--config-path", args.config_path), ("--config-name", args.config_name),
                                         ("--config-dir", args.config_dir)) if value is not None]  # fmt: skip
    if options:
        raise ConfigError(f"--cfg and --info with -m take only overrides, --resolve and --package, not {options[0]}")
    return ShowRequest(args.cfg, args.info is not None, args.package, args.resolve, rest)


def check_flags(args: argparse.Namespace) -> None:
    """Hydra's refusals of flags together (a ValueError and its traceback there), as one line."""
    if args.resolve and args.cfg is None and not args.help:
        raise ConfigError("--resolve goes with --cfg or --help: glove-exp --cfg job --resolve")
    shows = args.cfg is not None or args.info is not None  # with or without -m
    if args.run + args.shell_completion + (shows or args.multirun) > 1 or None not in (args.cfg, args.info):
        raise ConfigError("one of --run, --multirun, --cfg, --info and --shell-completion at a time (--cfg takes -m)")


def show_sweep(request: ShowRequest, config_dir: str) -> None:
    """Print each job's config (``# job N: <overrides>`` then its YAML, jobs separated by ``---``), or
    raise :class:`ConfigError` saying what to run instead."""
    if request.info:
        raise ConfigError(f"--info describes one config, not a sweep: drop -m and give one value per key, {INSTEAD}")
    if request.cfg not in ("job", "hydra", "all"):
        raise ConfigError(f"--cfg takes job, hydra or all, not {request.cfg!r}")
    if request.cfg != "job":
        raise ConfigError(
            f"--cfg {request.cfg} with -m: the Hydra config is one run's, not a sweep's; drop -m and give one value "
            f"per key, {INSTEAD}"
        )
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(request.overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]  # those the first job's config has too
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        sweeper = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra.sweeper
        check_basic(str(sweeper.get("_target_", "")), fixed)
        params = dict(sweeper.get("params") or {})
        for num, overrides in enumerate(job_overrides(request.overrides, params)):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=request.resolve)
            header = f"# job {num}: {' '.join(overrides)}"
            say(("---\n" if num else "") + header + "\n" + job_yaml(cfg, request.package, request.resolve).rstrip("\n"))


def check_basic(target: str, fixed: list[str]) -> None:
    """Only the grid sweeper's jobs are known before the sweep runs."""
    if not target.endswith(BASIC_SWEEPER):
        name = "an Optuna search" if "optuna" in target.lower() else f"the sweeper {target}"
        rerun = " ".join(["glove-exp --cfg hydra -p hydra.sweeper.params", *fixed])
        raise ConfigError(
            f"--cfg job -m cannot list the jobs of {name}: it chooses each trial's values while it runs; "
            f"its search space: {rerun}"
        )


def job_overrides(overrides: list[str], params: dict[str, Any]) -> list[list[str]]:
    """Each job's overrides, in the basic sweeper's order: ``hydra.sweeper.params`` then the command line,
    a later value of a key replacing an earlier one, the cartesian product of the sweeps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()), *overrides])
    values: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(f"{override.input_line}: a grid sweep (-m) takes lists and ranges, not an interval")
    return [list(job) for job in itertools.product(*values.values())]


def job_yaml(cfg: Any, package: str | None, resolve: bool) -> str:
    """The job's config (without ``hydra``) as ``--cfg job`` prints it, or the ``package`` inside it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import Container, OmegaConf, open_dict

    if resolve:  # interpolations such as ${hydra:runtime.cwd} read the Hydra config
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    selected = cfg if package in (None, "_global_") else OmegaConf.select(cfg, package)
    if selected is None:
        raise ConfigError(f"--package {package}: no such key in the config")
    if not isinstance(selected, Container):
        return f"{selected}\n"
    if resolve:
        OmegaConf.resolve(selected)
    return (f"# @package {package}\n" if package not in (None, "_global_") else "") + OmegaConf.to_yaml(selected)
