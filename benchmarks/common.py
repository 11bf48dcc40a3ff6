"""What every benchmark shares: the checkout, glove-exp's composed config, and publishing a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from glove_exp.app.schema import Config

ROOT = Path(__file__).resolve().parent.parent


def compose(overrides: list[str]) -> Config:
    """glove-exp's checked ``Config`` for ``conf/config.yaml`` plus ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from glove_exp.app.schema import register, to_config

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(hydra_compose("config", overrides=overrides))


def provenance() -> str:
    """Where and when a measurement ran: JAX's version and backend, the local time."""
    import time

    import jax

    return f"JAX {jax.__version__} on {jax.default_backend()}, {time.strftime('%Y-%m-%d %H:%M')}"


def report_file(value: str) -> Path:
    """The argparse type of a report's ``--out``: a file (an existing folder is refused in one line)."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; name the report's file, e.g. {path / 'report.md'}")
    return path


def publish(report: str, out: Path) -> None:
    """Print a Markdown report and write it to ``out``."""
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(f"written to {out}")
