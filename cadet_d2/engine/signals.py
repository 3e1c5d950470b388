"""Stopping a run cleanly on a signal: preemption, time limits, ``scancel``, Ctrl-C.

:class:`StopOnSignal` (a hook) catches the signals of ``CADET.CHECKPOINT.STOP_SIGNALS``
(SIGTERM, SIGINT and SIGUSR1 by default). The handler only records the signal; the hook then

1. lets the current iteration finish (its step and the hooks before this one in the list);
2. agrees with every other rank on whether to stop, at every iteration (one ``all_gather`` of
   the received signal, so all ranks stop at the same iteration);
3. gathers every rank's resume states (RNG, stream) and has the main rank write
   ``model_<iteration>.pth`` atomically, exactly like a periodic checkpoint of that iteration
   (a resumed run starts at the next iteration and loses nothing);
4. logs ``received SIGTERM at iteration N; checkpoint written: <file>; resume with --resume``;
5. under SLURM, for a signal of ``CADET.CHECKPOINT.REQUEUE_SIGNALS`` (SIGUSR1: the warning
   ``sbatch --signal=B:USR1@<seconds>`` sends ahead of the time limit), requeues the job with
   ``scontrol requeue <job>`` (:func:`requeue_slurm_job`);
6. exits with :data:`EXIT_STOPPED` (75, ``EX_TEMPFAIL``: stopped on purpose, resumable) by raising
   :class:`StopTraining` (a ``SystemExit``), so the other hooks' ``after_train`` still run.

A signal that comes while the checkpoint is written is logged and ignored: the save finishes.
A signal at the last iteration lets the run finish normally. With processes spawned by
``--num-gpus``, the launcher passes the signals on (:func:`join_forwarding_stop_signals`) and
exits with :data:`EXIT_STOPPED` too.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from typing import Mapping, Sequence

import torch.multiprocessing
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..layout import DEFAULT_STOP_SIGNALS

logger = logging.getLogger("cadet_d2")

# Exit status of a run stopped by a signal after writing its checkpoint (sysexits' EX_TEMPFAIL).
EXIT_STOPPED = 75


class StopTraining(SystemExit):
    """Raised by :class:`StopOnSignal` after the checkpoint is written; exits with :data:`EXIT_STOPPED`."""

    def __init__(self, message: str):
        super().__init__(EXIT_STOPPED)
        self.message = message


def slurm_job_id(env: Mapping[str, str] = os.environ) -> str | None:
    """The id ``scontrol requeue`` takes for this SLURM job (``<array job>_<task>`` for an array
    task), or None outside SLURM."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def requeue_slurm_job(env: Mapping[str, str] = os.environ) -> str:
    """Run ``scontrol requeue <job>`` for the SLURM job of ``env``; returns what happened, in words
    (it never raises: the checkpoint is written whatever SLURM says)."""
    job = slurm_job_id(env)
    if job is None:
        return "not requeued (not a SLURM job)"
    scontrol = shutil.which("scontrol", path=env.get("PATH"))
    if scontrol is None:
        return f"not requeued: scontrol is not on PATH (requeue job {job} by hand: scontrol requeue {job})"
    try:
        r = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, timeout=60, env=dict(env))
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not requeued: scontrol requeue {job} failed ({e})"
    if r.returncode != 0:
        return f"not requeued: scontrol requeue {job} exited {r.returncode}: {(r.stderr or r.stdout).strip()[:300]}"
    return f"SLURM job {job} requeued (scontrol requeue {job}); it resumes by itself when it starts again"


def join_forwarding_stop_signals(context, signals: Sequence[str] = DEFAULT_STOP_SIGNALS) -> None:
    """The launcher's side of a spawned multi-process run: wait for the processes of ``context``
    (``torch.multiprocessing.spawn(..., join=False)``), passing each stop signal on to them instead
    of dying (``sbatch --signal=B:USR1`` signals only this process); exit with :data:`EXIT_STOPPED`
    when they stopped on a signal."""
    def forward(signum: int, frame=None) -> None:
        for p in context.processes:
            if p.is_alive():
                os.kill(p.pid, signum)

    previous = {s: signal.signal(signal.Signals[s], forward) for s in signals}
    try:
        while not context.join():
            pass
    except torch.multiprocessing.ProcessExitedException as e:
        if e.exit_code == EXIT_STOPPED:
            raise SystemExit(EXIT_STOPPED) from None
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(signal.Signals[s], handler)


class StopOnSignal(HookBase):
    """Checkpoint and stop at the end of the iteration in which a stop signal arrived."""

    def __init__(self, signals: Sequence[str] = DEFAULT_STOP_SIGNALS,
                 requeue_signals: Sequence[str] = ("SIGUSR1",), env: Mapping[str, str] | None = None):
        self.signals = [signal.Signals[s] for s in signals]  # names checked by validate_cadet_config
        self.requeue_signals = set(requeue_signals)
        self.env = env
        self.received: str | None = None
        self.saving = False
        self.previous: dict[int, object] = {}
        self.pid = os.getpid()

    @classmethod
    def from_config(cls, cfg) -> "StopOnSignal":
        return cls(cfg.CADET.CHECKPOINT.STOP_SIGNALS, cfg.CADET.CHECKPOINT.REQUEUE_SIGNALS)

    # ---- handlers -------------------------------------------------------------------------------
    def handle(self, signum: int, frame=None) -> None:
        """The signal handler: records the signal, nothing else."""
        name = signal.Signals(signum).name
        if os.getpid() != self.pid:  # a forked data-loader worker: the main process stops the run
            return
        if self.saving:
            logger.warning(f"[cadet] received {name} while the checkpoint is written: ignored, the save finishes")
        elif self.received is None:
            self.received = name
            logger.warning(f"[cadet] received {name}: stopping after the current iteration, with a checkpoint")
        else:
            logger.warning(f"[cadet] received {name} again: already stopping after the current iteration")

    def before_train(self) -> None:
        self.pid = os.getpid()
        for s in self.signals:
            self.previous[s] = signal.signal(s, self.handle)
        logger.info(f"[cadet] on {', '.join(s.name for s in self.signals)}: checkpoint at the end of the "
                    f"iteration, then exit {EXIT_STOPPED}")

    def after_train(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous.clear()

    # ---- stopping -------------------------------------------------------------------------------
    def agreed_signal(self) -> str | None:
        """The signal received by the lowest rank that received one (the same on every rank)."""
        if comm.get_world_size() == 1:
            return self.received
        return next((s for s in comm.all_gather(self.received) if s), None)

    def after_step(self) -> None:
        if not self.signals:
            return
        name = self.agreed_signal()
        if name is None:
            return
        it, trainer = self.trainer.iter, self.trainer
        if it >= trainer.max_iter - 1:
            logger.warning(f"[cadet] received {name} at the last iteration ({it}): the run finishes normally")
            return
        path = self.write_checkpoint(it)
        message = f"[cadet] received {name} at iteration {it}; " + (
            f"checkpoint written: {path}; resume with --resume (the resumed run starts at iteration {it + 1})"
            if path else f"no checkpoint written ({trainer.checkpointer.blocked_reason}); last good checkpoint: "
                         f"{trainer.checkpointer.last_good()}")
        if comm.is_main_process():
            logger.warning(message)
            if path and name in self.requeue_signals:
                env = os.environ if self.env is None else self.env
                if slurm_job_id(env):
                    logger.warning(f"[cadet] {requeue_slurm_job(env)}")
        raise StopTraining(message)

    def write_checkpoint(self, iteration: int) -> str | None:
        """Every rank: gather the resume states; main rank: write ``model_<iteration>.pth`` (unless
        the periodic checkpointer just wrote it). Returns its path (None if saving is blocked)."""
        ckpt = self.trainer.checkpointer
        if comm.get_world_size() > 1:
            for obj in ckpt.checkpointables.values():
                if callable(getattr(obj, "gather", None)):
                    obj.gather()
        name = f"model_{iteration:07d}"
        path = os.path.join(ckpt.save_dir, name + ".pth")
        written = True
        if comm.is_main_process():
            already = ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == path and os.path.isfile(path)
            self.saving = True
            try:
                if not already:
                    ckpt.save(name, iteration=iteration)
            finally:
                self.saving = False
            written = os.path.isfile(path) and not ckpt.blocked_reason
        comm.synchronize()
        return path if written else None
