"""Running the plan here, one training after another, resumable.

Each run is a subprocess ``python -m cadet_d2.engine.train --config-file CONFIG [--resume] OPTS...
SEED k OUTPUT_DIR <study output>/<arm>/seed<k>`` (tools/train_net.py's command line; ``--eval-only``
with its ``model_final.pth`` when the training finished but its final evaluation is missing).
SIGUSR1 and SIGTERM sent to this process (SLURM's signal ahead of the time limit, preemption)
are passed on to the training, which saves a checkpoint and stops; the run is then
``interrupted`` and resumes on the next invocation. Before it starts, ``status.json`` in the run folder
says ``running``; afterwards ``done`` or ``failed`` with the exit code and the last lines of
stderr, plus the attempt's start/end time, wall time and peak RSS (``os.wait4`` of that child).
A finished run is skipped; a run with a checkpoint continues with ``--resume``; a run folder
locked by another live ``ablate`` process (``.lock``) is left to it; a failure does not stop the
others. Phase 2 is re-planned after every run, so it starts as soon as phase 1 is complete.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from ..utils.machine import machine_label
from .plan import Plan, Run, check_configs, check_fresh, make_plan
from .rundir import FINAL, checkpoint_iteration, last_checkpoint, read_status, write_status
from .spec import Study
from .stats import fmt_duration

STDERR_TAIL = 30


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def run_lock(run_dir: str) -> Iterator[bool]:
    """Hold ``run_dir/.lock`` (True) or learn that another live process holds it (False)."""
    os.makedirs(run_dir, exist_ok=True)
    fd = os.open(os.path.join(run_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the ``ablate`` process dies (Linux), so that killing
    ``ablate`` never leaves a training writing into a run folder behind the next invocation."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tail(path: str, start: int, n: int = STDERR_TAIL) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-n:]


def next_command(plan: Plan, run: Run) -> list[str]:
    """What ``run`` needs next (after the interpreter): evaluate its ``model_final.pth`` when the
    training finished but its final evaluation is missing, else train (resuming from its checkpoint)."""
    eval_only = os.path.isfile(os.path.join(run.dir, FINAL))
    return plan.command(run, resume=last_checkpoint(run.dir) is not None, eval_only=eval_only)


def execute(plan: Plan, run: Run, env: Optional[dict] = None) -> dict:
    """Train ``run`` now (resuming from its checkpoint if any); return its new status."""
    os.makedirs(run.dir, exist_ok=True)
    status = read_status(run.dir)
    attempts = [_closed(a) for a in status.get("attempts", [])]
    ckpt = last_checkpoint(run.dir)
    cmd = [sys.executable, *next_command(plan, run)]
    max_iter = int(plan.opt_value("SOLVER.MAX_ITER") or 0)
    attempt = {"started": _now(), "start_time": time.time(), "resumed_from": os.path.basename(ckpt) if ckpt else None,
               "start_iter": checkpoint_iteration(ckpt, max_iter), "machine": machine_label()}
    status.update(state="running", arm=run.arm.name, seed=run.seed, command=cmd, pid=os.getpid(),
                  host=os.uname().nodename, attempts=attempts + [attempt], error=None)
    write_status(run.dir, status)
    err_path = os.path.join(run.dir, "stderr.log")
    with open(os.path.join(run.dir, "stdout.log"), "ab") as out, open(err_path, "ab") as err:
        banner = f"==== ablate attempt {len(attempts) + 1} {_now()}: {' '.join(cmd)}\n".encode()
        out.write(banner)
        err.write(banner)
        out.flush()
        err.flush()
        start = err.tell()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **plan.study.env, **(env or {})},
                                preexec_fn=_die_with_parent)
        status["child_pid"] = proc.pid
        write_status(run.dir, status)
        with _forward_signals(proc.pid) as forwarded:
            try:
                _, wstatus, usage = os.wait4(proc.pid, 0)
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                _, wstatus, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(wstatus)
                _finish(run, status, attempt, proc.returncode, usage, _tail(err_path, start), interrupted="SIGINT")
                raise
    proc.returncode = code = os.waitstatus_to_exitcode(wstatus)
    return _finish(run, status, attempt, code, usage, _tail(err_path, start),
                   interrupted=forwarded[0] if forwarded else "")


def _closed(attempt: dict) -> dict:
    """An earlier attempt as recorded; one that never recorded its end (the runner was killed,
    the node lost) gets ``ended: None``, ``exit_code: None`` and ``lost`` saying so."""
    if "ended" in attempt:
        return attempt
    attempt = {k: v for k, v in attempt.items() if k != "start_time"}
    return {**attempt, "ended": None, "exit_code": None,
            "lost": "no end recorded: the runner was killed or its machine lost"}


FORWARDED = (signal.SIGUSR1, signal.SIGTERM)


@contextmanager
def _forward_signals(pid: int) -> Iterator[list[str]]:
    """While the training ``pid`` runs, pass SIGUSR1 and SIGTERM received here on to it; yields the
    names of the signals passed on. Outside the main thread (where Python cannot set handlers)
    nothing is forwarded."""
    got: list[str] = []

    def forward(signum, _frame):
        got.append(signal.Signals(signum).name)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    try:
        previous = {s: signal.signal(s, forward) for s in FORWARDED}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield got
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _finish(run: Run, status: dict, attempt: dict, code: int, usage, tail: list[str], interrupted: str = "") -> dict:
    """Record the attempt's end; ``interrupted``: the signal that stopped it ('' = none)."""
    end = time.time()
    attempt.update(ended=_now(), wall_s=round(end - attempt.pop("start_time"), 3), exit_code=code,
                   peak_rss_mb=round(usage.ru_maxrss / 1024.0, 1))  # Linux: ru_maxrss in KiB
    finished = run.state() == "done"
    if finished and code == 0:
        status.update(state="done", error=None, stderr_tail=None)
    else:
        why = (f"interrupted by {interrupted} (exit code {code})" if interrupted else
               f"exit code {code}" if code else f"exit code 0 but no final {run.metrics_file}")
        status.update(state="interrupted" if interrupted else "failed", error=why, stderr_tail=tail)
    attempts = status["attempts"]
    attempts[-1] = attempt
    status.update(wall_s=round(sum(a.get("wall_s", 0.0) for a in attempts), 3),
                  peak_rss_mb=max(a.get("peak_rss_mb", 0.0) for a in attempts), pid=None, child_pid=None)
    write_status(run.dir, status)
    return status


def run_order(plan: Plan, run: Run) -> tuple:
    """Execution order: the fusion arms' baseline first, then phase 1, phase 2, the other
    baselines, the modality ablations, the sensor-failure arms; seed-major within each (every
    arm gets seed 0 first)."""
    refs = {a.baseline for a in plan.arms if a.phase in ("1", "2")}
    rank = {"1": 1, "2": 2, "baseline": 3, "modality": 4, "sensor": 5}[run.arm.phase]
    if run.arm.name in refs:
        rank = 0
    return rank, plan.study.seeds.index(run.seed), plan.runs.index(run)


def run_study(study: Study, cli_opts: Optional[list[str]] = None, dry_run: bool = False, retry_failed: bool = True,
              echo: Callable[[str], None] = print) -> dict:
    """Run every unfinished run of the study here, until one is interrupted (SIGTERM or SIGUSR1 to
    this process: passed on, then the runner stops); returns counts of the plan's states plus
    ``total``, ``locked`` and this invocation's ``ran``, ``failed`` and ``interrupted``."""
    attempted: set[str] = set()
    durations: list[float] = []
    counts = {"ran": 0, "failed": 0, "interrupted": 0}
    locked: set[str] = set()  # runs another process held when this one reached them
    checked: set[str] = set()  # arms whose config loaded (phase 2 arms appear later)
    check_fresh(make_plan(study, cli_opts))  # before a frozen phase-2 selection is made from stale runs
    while True:
        plan = make_plan(study, cli_opts, freeze=not dry_run)
        if not plan.schedule_ok:
            raise SystemExit(f"cannot run: {plan.schedule_note}")
        checked |= check_configs(plan, frozenset(checked))
        check_fresh(plan)
        todo = [r for r in plan.runs if r.key not in attempted and r.state() not in ("done", "pending")
                and (retry_failed or r.state() != "failed")]
        todo.sort(key=lambda r: run_order(plan, r))
        if not todo:
            break
        run = todo[0]
        attempted.add(run.key)
        done = sum(r.state() == "done" for r in plan.runs)
        head = f"[{done}/{len(plan.runs)}] {run.key}"
        if dry_run:
            cmd = next_command(plan, run)
            what = "evaluate" if "--eval-only" in cmd else "resume" if "--resume" in cmd else "train"
            echo(f"{head}: {what}: {' '.join(cmd)}")
            continue
        with run_lock(run.dir) as mine:
            if not mine:
                locked.add(run.key)
                echo(f"{head}: running in another process (locked), skipped")
                continue
            what = "resuming from " + os.path.basename(last_checkpoint(run.dir)) if last_checkpoint(run.dir) else "training"
            echo(f"{head}: {what} -> {run.dir}")
            t0 = time.time()
            status = execute(plan, run)
        durations.append(time.time() - t0)
        counts["ran"] += 1
        if status["state"] == "interrupted":  # SIGTERM/SIGUSR1 to this runner: stop here, not only that run
            counts["interrupted"] += 1
            echo(f"{head}: interrupted ({status['error']}), its checkpoint kept; stopping: run `ablate.py run` "
                 "again to resume it and train the rest")
            break
        if status["state"] != "done":
            counts["failed"] += 1
        done = sum(r.state() == "done" for r in plan.runs)
        left = max(len(plan.runs) - done - counts["failed"], 0)  # failed ones are not retried in this invocation
        mean = sum(durations) / len(durations)
        progress = f"{done}/{len(plan.runs)} done, ETA {fmt_duration(mean * left)} ({left} runs x mean {fmt_duration(mean)})"
        if status["state"] == "done":
            echo(f"{head}: done in {fmt_duration(durations[-1])}; {progress}")
        else:
            echo(f"{head}: FAILED ({status['error']}); see {run.dir}/stderr.log; {progress}; last lines:\n    "
                 + "\n    ".join(status.get("stderr_tail", [])[-5:]))
    plan = make_plan(study, cli_opts, freeze=not dry_run)
    states = [r.state() for r in plan.runs]
    summary = {s: states.count(s) for s in ("done", "failed", "pending", "todo", "partial", "running", "lost")}
    summary.update(total=len(plan.runs), locked=len(locked), **counts)
    for arm in plan.arms:
        if arm.pending and dry_run:
            echo(f"{arm.name}: {arm.pending}")
    if not dry_run:
        elsewhere = sum(r.key in locked and r.state() != "done" for r in plan.runs)  # not yet finished there
        echo(f"study {study.name}: {summary['done']}/{len(plan.runs)} runs done, {summary['failed']} failed, "
             f"{summary['pending']} pending" + (f", {elsewhere} running elsewhere" if elsewhere else "")
             + (", stopped by a signal (interrupted)" if counts["interrupted"] else ""))
    return summary
