"""Stand-ins for SLURM's ``sbatch``, ``srun`` and ``sacct`` on one machine (tests/test_slurm.py puts
them first on PATH through :func:`install`).

``sbatch FILE`` keeps a copy of the script it is given in ``$FAKE_SLURM_DIR/<job id>.sh``, answers
``Submitted batch job <id>`` at once, as SLURM does, and runs the array's tasks one after another in a
detached process with the environment SLURM gives a task. ``srun`` runs its command with its
``--output``/``--error`` patterns expanded. ``sacct`` knows no job, so submitit waits for the
result files the tasks write.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

FAKE_DIR = "FAKE_SLURM_DIR"


def install(bin_dir: Path, record_dir: Path) -> dict[str, str]:
    """Writes the three commands into ``bin_dir``; returns the environment variables that use them."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record_dir.mkdir(parents=True, exist_ok=True)
    for name in ("sbatch", "srun", "sacct"):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {name} "$@"\n')
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_DIR: str(record_dir)}


def expand(pattern: str, env: dict[str, str]) -> str:
    """SLURM's filename patterns: %A array job, %a array task, %j job, %t task rank."""
    values = {
        "A": env["SLURM_ARRAY_JOB_ID"],
        "a": env["SLURM_ARRAY_TASK_ID"],
        "j": env["SLURM_JOB_ID"],
        "t": env["SLURM_PROCID"],
    }
    return re.sub(r"%([Aajt])", lambda m: values[m.group(1)], pattern)


def sbatch_options(script: str) -> dict[str, str]:
    """``#SBATCH --key=value`` lines (``--key`` alone gives an empty value)."""
    found = re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.MULTILINE)
    return {key: value for key, value in found}


def task_env(job_id: int, task: int) -> dict[str, str]:
    return {
        "SLURM_JOB_ID": str(job_id + 1 + task),
        "SLURM_ARRAY_JOB_ID": str(job_id),
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }


def sbatch(args: list[str]) -> None:
    [path] = args
    script = Path(path).read_text()
    job_id = os.getpid()  # unique while it runs, like SLURM's counter
    saved = Path(os.environ[FAKE_DIR]) / f"{job_id}.sh"
    saved.write_text(script)  # submitit moves its file away as soon as sbatch returns
    print(f"Submitted batch job {job_id}", flush=True)
    # The tasks run detached, from the saved copy, with neither of sbatch's output pipes: submitit
    # reads them to the end before it writes the job's pickle that the tasks wait for. What the
    # stand-in itself says (a traceback) goes to <job id>.err beside the copy.
    with open(saved.with_suffix(".err"), "w") as errors:
        subprocess.Popen(
            [sys.executable, __file__, "run-array", str(job_id), str(saved)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True,
        )  # fmt: skip


def run_array(args: list[str]) -> None:
    job_id, saved = int(args[0]), Path(args[1])
    options = sbatch_options(saved.read_text())
    first, last = map(int, options["array"].split("%")[0].split("-"))
    for task in range(first, last + 1):
        env = os.environ | task_env(job_id, task)
        output = Path(expand(options["output"], env))
        error = Path(expand(options.get("error", options["output"]), env))
        for log in (output, error):
            # SLURM starts a task long after submitit has made the task's folder (once sbatch answered);
            # this stand-in starts at once, so it makes the folder rather than race submitit for it.
            log.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a") as out, open(error, "a") as err:
            subprocess.run(["bash", str(saved)], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)


def srun(args: list[str]) -> None:
    files = {"--output": None, "--error": None}
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option in files:
            files[option] = args.pop(0)
    env = dict(os.environ)
    with open(expand(files["--output"], env), "a") as out, open(expand(files["--error"], env), "a") as err:
        sys.exit(subprocess.run(args, stdout=out, stderr=err).returncode)


def sacct(args: list[str]) -> None:
    print("JobID|State|NodeList")  # no job known: submitit goes on waiting for the result files


if __name__ == "__main__":
    command = {"sbatch": sbatch, "run-array": run_array, "srun": srun, "sacct": sacct}[sys.argv[1]]
    command(sys.argv[2:])
