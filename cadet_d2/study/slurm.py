"""SLURM: one job-array task per unfinished run, each task an ``ablate run-one`` (so it gets the
same status file, locking and resuming as a local run), and a follow-up job that plans again
after the array (phase 2 becomes concrete then) and submits the new runs and the killed ones
that can resume (:func:`pending_runs`).

Files in ``<study output>/slurm/<time>/``: ``tasks.txt`` (one command per line),
``array.sbatch``, ``next.sbatch`` and ``submit.sh`` (``bash submit.sh`` submits both, the
follow-up with ``--dependency=afterany``). ``--submit`` does what submit.sh does, with ``sbatch``
from PATH; a refused script stops with SLURM's message and the ``slurm:`` key to change.

Every command is ``python -m cadet_d2.study ...`` of the interpreter that wrote the scripts (the
installed package, not a checkout's path). An array task ``exec``s its command, so that the
signal SLURM sends ahead of the time limit (``--signal=B:USR1@<slurm.signal_seconds>``) reaches
the runner, which passes it on to the training; the array is ``--requeue``-able
(``slurm.requeue``), and a requeued task resumes from the run's checkpoint.
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
from .rundir import checkpoint_iteration, last_checkpoint, read_status

STUDY_MODULE = "cadet_d2.study"  # python -m STUDY_MODULE: tools/ablate.py's command line


class SlurmError(RuntimeError):
    """sbatch refused a script; the message says what SLURM said, which script and what to change."""


def _ablate_args(plan: Plan, output: Optional[str], cli_opts: list[str]) -> list[str]:
    """The study file and the options every ``ablate.py`` call of this plan passes on (``--opts`` last)."""
    args = [plan.study.path] + (["--with-optional"] if plan.study.include_optional else [])
    args += ["--output", output] if output else []
    return args + (["--opts", *cli_opts] if cli_opts else [])


def pending_runs(plan: Plan, new_only: bool = False) -> list[Run]:
    """Concrete runs not finished. ``new_only`` (the follow-up job): runs never attempted, and runs
    whose last attempt was killed (preempted, cancelled, time limit: status ``running`` or
    ``interrupted``) after it wrote a newer checkpoint, which resume from it; failed runs are not
    resubmitted, and neither is a killed run that made no progress, so this never loops."""
    runs = [r for r in plan.runs if r.state() not in ("done", "pending")]
    return [r for r in runs if _resubmit(plan, r)] if new_only else runs


def _resubmit(plan: Plan, run: Run) -> bool:
    status = read_status(run.dir)
    if not status:
        return True
    if status.get("state") not in ("running", "interrupted") or not status.get("attempts"):
        return False
    max_iter = int(plan.opt_value("SOLVER.MAX_ITER") or 0)
    return checkpoint_iteration(last_checkpoint(run.dir), max_iter) > int(status["attempts"][-1].get("start_iter") or 0)


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
    if array and int(s.get("signal_seconds", 0)):  # B: to the batch shell, which is the runner (exec)
        lines.append(f"#SBATCH --signal=B:USR1@{int(s['signal_seconds'])}")
    if array:
        lines.append("#SBATCH --requeue" if s.get("requeue", True) else "#SBATCH --no-requeue")
    lines += [f"#SBATCH {x}" for x in s.get("extra", [])]
    # The setup line (`module load`, conda's `activate`) runs before `set -u`: such scripts read
    # variables that may be unset, which `set -u` turns into a failed job.
    lines += ["set -eo pipefail", f"cd {shlex.quote(os.getcwd())}"]
    if s.get("setup"):
        lines.append(s["setup"])
    return lines + ["set -u"]


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
        f'LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(folder)}/tasks.txt)', 'echo "$LINE"',
        "# exec: the runner replaces this shell, so SLURM's signals (USR1 ahead of the limit, TERM) reach it",
        'eval "exec $LINE"']
    nxt = _header(plan, name + "-next", folder) + [
        "# after the array: plan again (phase 2 is resolved from phase-1 results) and submit what is new",
        " ".join([py, "-m", STUDY_MODULE, "run", *map(shlex.quote, common[:1]), "--slurm", "--submit", "--new-only",
                  *map(shlex.quote, common[1:])])]
    submit = ["#!/bin/bash", "set -euo pipefail", f"cd {shlex.quote(folder)}",
              "jid=$(sbatch --parsable array.sbatch)", 'echo "array job $jid"',
              'sbatch --dependency=afterany:"${jid%%;*}" next.sbatch']
    for fname, lines in (("array.sbatch", body), ("next.sbatch", nxt), ("submit.sh", submit)):
        with open(os.path.join(folder, fname), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(os.path.join(folder, fname), 0o755)
    return folder


def _hint(message: str) -> str:
    """The ``slurm:`` key that most likely makes sbatch accept the script."""
    m = message.lower()
    if "gres" in m or "generic resource" in m or "gpu" in m:
        return "gpus (e.g. `gpus: 0` on nodes without GPUs, or the count of GPUs a node has)"
    if "partition" in m:
        return "partition (one that `sinfo` lists, or '' for the default)"
    if "memory" in m or "mem" in m:
        return "mem (at most a node's memory, e.g. `mem: 3G`)"
    if "time limit" in m:
        return "time (within the partition's limit, e.g. `time: \"04:00:00\"`)"
    if "cpu" in m or "processor" in m:
        return "cpus (at most a node's CPUs)"
    return "partition, time, gpus, cpus, mem or extra"


def sbatch(script: str, plan: Plan, *args: str) -> str:
    """``sbatch --parsable [args] script``; the job id, or :class:`SlurmError` with SLURM's message."""
    r = subprocess.run(["sbatch", "--parsable", *args, script], capture_output=True, text=True)
    if r.returncode:
        said = (r.stderr.strip() or r.stdout.strip() or f"exit code {r.returncode}").replace("\n", "\n    ")
        raise SlurmError(f"sbatch refused {script}:\n    {said}\nChange the `slurm:` block of {plan.study.path}: "
                         f"{_hint(said)}; then run `ablate.py run {plan.study.path} --slurm --submit` again.")
    return r.stdout.strip().split(";")[0]


def submit(plan: Plan, folder: str, echo: Callable[[str], None] = print) -> bool:
    """Submit the array, then the follow-up job after it (``--dependency=afterany``), as
    ``submit.sh`` does; False when sbatch is not on PATH."""
    if not shutil.which("sbatch"):
        echo(f"error: sbatch is not available here, nothing submitted: submit on the cluster with "
             f"`bash {folder}/submit.sh`")
        return False
    array = sbatch(os.path.join(folder, "array.sbatch"), plan)
    nxt = sbatch(os.path.join(folder, "next.sbatch"), plan, f"--dependency=afterany:{array}")
    echo(f"submitted array job {array} and follow-up job {nxt} (plans again after the array: phase 2)")
    return True


def _run_one_cmd(plan: Plan, run: Run, output: Optional[str], cli_opts: list[str]) -> list[str]:
    return [sys.executable, "-m", STUDY_MODULE, "run-one", plan.study.path, "--arm", run.arm.name, "--seed", str(run.seed),
            *_ablate_args(plan, output, cli_opts)[1:]]
