"""SLURM: one job-array task per unfinished run, each task an ``ablate.py run-one`` (so it gets
the same status file, locking and resuming as a local run), and a follow-up job that plans
again after the array (phase 2 becomes concrete then) and submits the new runs.

Files in ``<study output>/slurm/<time>/``: ``tasks.txt`` (one command per line),
``array.sbatch``, ``next.sbatch`` and ``submit.sh`` (``bash submit.sh`` submits both, the
follow-up with ``--dependency=afterany``). With ``--submit``, submitit is used when importable,
else ``sbatch`` when on PATH.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Callable, Optional

from .plan import Plan, Run
from .rundir import read_status

ABLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools", "ablate.py")


def _ablate_args(plan: Plan, output: Optional[str], cli_opts: list[str]) -> list[str]:
    """The study file and the options every ``ablate.py`` call of this plan passes on (``--opts`` last)."""
    args = [plan.study.path] + (["--with-optional"] if plan.study.include_optional else [])
    args += ["--output", output] if output else []
    return args + (["--opts", *cli_opts] if cli_opts else [])


def pending_runs(plan: Plan, new_only: bool = False) -> list[Run]:
    """Concrete runs not finished (``new_only``: never attempted, so failures are not resubmitted
    in a loop)."""
    runs = [r for r in plan.runs if r.state() not in ("done", "pending")]
    return [r for r in runs if not read_status(r.dir)] if new_only else runs


def _header(plan: Plan, name: str, folder: str, array: str = "") -> list[str]:
    s = plan.study.slurm
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --time={s['time']}",
             f"#SBATCH --cpus-per-task={s['cpus']}", f"#SBATCH --mem={s['mem']}",
             f"#SBATCH --output={folder}/%x_%A_%a.out" if array else f"#SBATCH --output={folder}/%x_%j.out"]
    if array:
        lines.append(f"#SBATCH --array={array}")
    if s.get("partition"):
        lines.append(f"#SBATCH --partition={s['partition']}")
    if int(s.get("gpus", 0)) and array:
        lines.append(f"#SBATCH --gres=gpu:{int(s['gpus'])}")
    lines += [f"#SBATCH {x}" for x in s.get("extra", [])]
    lines += ["set -euo pipefail", f"cd {shlex.quote(os.getcwd())}"]
    if s.get("setup"):
        lines.append(s["setup"])
    return lines


def write_slurm(plan: Plan, output: Optional[str], cli_opts: list[str], new_only: bool = False) -> Optional[str]:
    """Write the scripts for the unfinished runs; return their folder (None: nothing to run)."""
    runs = pending_runs(plan, new_only)
    if not runs:
        return None
    folder = os.path.abspath(os.path.join(plan.study.output, "slurm", time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(folder, exist_ok=True)
    py = shlex.quote(sys.executable)
    common = _ablate_args(plan, output, cli_opts)
    with open(os.path.join(folder, "tasks.txt"), "w", encoding="utf-8") as f:
        for r in runs:
            f.write(" ".join(map(shlex.quote, _run_one_cmd(plan, r, output, cli_opts))) + "\n")
    name = f"ablate-{plan.study.name}"
    parallel = int(plan.study.slurm.get("parallel", 0))
    array = f"0-{len(runs) - 1}" + (f"%{parallel}" if parallel else "")
    body = _header(plan, name, folder, array) + [
        f'LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(folder)}/tasks.txt)', 'echo "$LINE"', 'eval "$LINE"']
    nxt = _header(plan, name + "-next", folder) + [
        "# after the array: plan again (phase 2 is resolved from phase-1 results) and submit what is new",
        " ".join([py, shlex.quote(ABLATE), "run", *map(shlex.quote, common[:1]), "--slurm", "--submit", "--new-only",
                  *map(shlex.quote, common[1:])])]
    submit = ["#!/bin/bash", "set -euo pipefail", f"cd {shlex.quote(folder)}",
              "jid=$(sbatch --parsable array.sbatch)", 'echo "array job $jid"',
              'sbatch --dependency=afterany:"${jid%%;*}" next.sbatch']
    for fname, lines in (("array.sbatch", body), ("next.sbatch", nxt), ("submit.sh", submit)):
        with open(os.path.join(folder, fname), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(os.path.join(folder, fname), 0o755)
    return folder


def submit(plan: Plan, folder: str, output: Optional[str], cli_opts: list[str], new_only: bool,
           echo: Callable[[str], None] = print) -> bool:
    """Submit the written scripts: submitit when importable, else ``bash submit.sh`` if sbatch exists."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        submitit = None
    if submitit is not None:
        return _submit_submitit(plan, folder, output, cli_opts, new_only, echo)
    if shutil.which("sbatch"):
        subprocess.run(["bash", os.path.join(folder, "submit.sh")], check=True)
        return True
    echo("neither submitit nor sbatch is available here: submit on the cluster with "
         f"`bash {folder}/submit.sh`")
    return False


def _run_one_cmd(plan: Plan, run: Run, output: Optional[str], cli_opts: list[str]) -> list[str]:
    return [sys.executable, ABLATE, "run-one", plan.study.path, "--arm", run.arm.name, "--seed", str(run.seed),
            *_ablate_args(plan, output, cli_opts)[1:]]


def _submit_submitit(plan: Plan, folder: str, output: Optional[str], cli_opts: list[str], new_only: bool,
                     echo: Callable[[str], None]) -> bool:
    import submitit

    s = plan.study.slurm
    ex = submitit.AutoExecutor(folder=os.path.join(folder, "submitit"))
    params = {"timeout_min": _minutes(s["time"]), "cpus_per_task": int(s["cpus"]), "gpus_per_node": int(s["gpus"]),
              "slurm_array_parallelism": int(s.get("parallel") or 1), "name": f"ablate-{plan.study.name}"}
    if s.get("partition"):
        params["slurm_partition"] = s["partition"]
    ex.update_parameters(**params)
    runs = pending_runs(plan, new_only)
    cmds = [_run_one_cmd(plan, r, output, cli_opts) for r in runs]
    jobs = ex.map_array(_call, cmds)
    echo(f"submitted {len(jobs)} runs with submitit (job {jobs[0].job_id if jobs else '-'}); "
         f"after they finish, run `ablate.py run {plan.study.path} --slurm --submit` again for phase 2")
    return True


def _call(cmd: list[str]) -> int:
    return subprocess.run(cmd, check=True).returncode


def _minutes(t: str) -> int:
    """SLURM time [D-]HH:MM:SS -> minutes."""
    days, _, rest = t.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
