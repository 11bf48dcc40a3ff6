"""What a glove-exp sweep pays before its jobs' own work, measured in a new interpreter: importing the
modules its process runs on, and composing its job configs as its launcher does (after the sweep's own
config, which Hydra composes first).

    python -m benchmarks.sweep_start '[["experiment=seed_tutorial", "trainer.seed=0"], ...]'

prints ``{"imports": seconds, "composing": seconds}``; ``benchmarks.sweep_speed`` runs it beside each
sweep. Only the standard library is imported before the clock starts.
"""

from __future__ import annotations

import importlib
import json
import sys
import time

from benchmarks.common import ROOT

# What `glove-exp -m` imports before its first job logs: the console script and Hydra, the launcher,
# MLflow and its SQL store (the parent run), the pipeline (JAX, Haiku, scikit-learn, matplotlib) and
# the sweep's summary.
MODULES = (
    "glove_exp.app.cli",
    "hydra_plugins.glove_exp_launcher.launcher",
    "glove_exp.app.parent",
    "mlflow.store.tracking.sqlalchemy_store",
    "glove_exp.app.pipeline",
    "glove_exp.report.sweep",
)


def main(argv: list[str] | None = None) -> int:
    jobs = json.loads((sys.argv[1:] if argv is None else argv)[0])
    tic = time.perf_counter()
    for name in MODULES:
        importlib.import_module(name)
    imports = time.perf_counter() - tic

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from glove_exp.app.schema import register
    from hydra_plugins.glove_exp_launcher.launcher import ComposedOnce

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", jobs[0], run_mode=RunMode.MULTIRUN)
        tic = time.perf_counter()
        launcher_loader = ComposedOnce(loader)
        for overrides in jobs:
            launcher_loader.load_sweep_config(master, overrides)
        composing = time.perf_counter() - tic
    print(json.dumps({"imports": imports, "composing": composing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
