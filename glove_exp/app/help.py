"""``glove-exp --help``: Hydra's help text, from the same template (``hydra.help`` in conf/config.yaml) and
the same composed config, without Hydra's listing of the config groups: Hydra builds a fresh copy of its
config repository for each group and each option it lists (about a second, most of the help's time);
the groups here are the folders of ``conf/`` and their options its YAML files, which is what Hydra lists.

Only ``-h``/``--help`` with overrides and ``--resolve`` is answered here; any other flag beside it
(``-m``, ``--cfg``, ``--config-dir``, ...) goes to Hydra as before, and so does a help template that
asks for what is not computed here (``$FLAGS_HELP``, ``$HYDRA_CONFIG_GROUPS``) or a config whose
``hydra.searchpath`` adds config folders."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from glove_exp.io.console import say

HELP_FLAGS = ("-h", "--help")
HYDRA_GROUP = "hydra"  # Hydra's own groups (launchers, logging): --hydra-help lists them
SUBSTITUTED = {"APP_CONFIG_GROUPS", "CONFIG"}  # the template's $-names computed here


@dataclass(frozen=True)
class HelpRequest:
    overrides: list[str]
    resolve: bool


def help_request(argv: list[str]) -> HelpRequest | None:
    """The request when ``argv`` (without the program) asks for the application's help with nothing but
    overrides and ``--resolve`` beside it, else None (Hydra answers, or there is no help to show)."""
    if not any(arg in HELP_FLAGS for arg in argv):
        return None
    rest = [arg for arg in argv if arg not in (*HELP_FLAGS, "--resolve")]
    if any(arg.startswith("-") for arg in rest):  # overrides never start with "-"; "--" included
        return None
    return HelpRequest(overrides=rest, resolve="--resolve" in argv)


def config_groups(config_dir: str | Path, parent: str = "") -> dict[str, list[str]]:
    """Each config group under ``config_dir`` (``a/b`` for a nested one) with its sorted options, the names
    of its YAML files; without Hydra's own groups. A folder without YAML files is no group, as for Hydra."""
    groups: dict[str, list[str]] = {}
    folder = Path(config_dir, parent)
    for path in sorted(folder.iterdir()):
        group = f"{parent}/{path.name}" if parent else path.name
        if not path.is_dir() or path.name in ("__pycache__",) or group == HYDRA_GROUP:
            continue
        options = sorted(p.stem for p in path.iterdir() if p.suffix == ".yaml" and p.is_file())
        if options:
            groups[group] = options
        groups.update(config_groups(config_dir, group))
    return dict(sorted(groups.items()))


def format_groups(groups: dict[str, list[str]]) -> str:
    """As Hydra's help writes them: ``group: option, option`` a line."""
    return "".join(f"{group}: {', '.join(options)}\n" for group, options in groups.items())


def template_names(template: str) -> set[str]:
    """The ``$name`` and ``${name}`` placeholders of a :class:`string.Template`."""
    return {m["named"] or m["braced"] for m in string.Template.pattern.finditer(template) if m["named"] or m["braced"]}


def show_help(request: HelpRequest, config_dir: str) -> bool:
    """Print the help for ``request``'s config; False, printing nothing, when its template needs Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose(config_name="config", overrides=request.overrides, return_hydra_config=True)
    template = cfg.hydra.help.template  # its ${hydra.help.header} and footer resolved
    if not template_names(template) <= SUBSTITUTED or cfg.hydra.searchpath:  # groups from elsewhere too
        return False
    HydraConfig.instance().set_config(cfg)  # --resolve: ${hydra:runtime.cwd} reads it
    with open_dict(cfg):
        del cfg["hydra"]
    groups = format_groups(config_groups(config_dir))
    say(
        string.Template(template).substitute(
            APP_CONFIG_GROUPS=groups, CONFIG=OmegaConf.to_yaml(cfg, resolve=request.resolve)
        )
    )
    return True
