"""Checks run before training starts, so that a run fails in seconds rather than at a checkpoint
hours later: OUTPUT_DIR must be writable and have room for the run's checkpoints.

The size of one checkpoint is measured, not guessed: the model's state dict and every other
checkpointable (scheduler, grad scaler, RNG, training stream, ...) are serialised once with
``torch.save`` into a sink that only counts bytes, and the optimizer state, which does not exist
before the first step, is computed from the parameter shapes (SGD with momentum: one buffer per
parameter, Adam/AdamW: two moments and a step count, three moments with ``amsgrad``).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

import torch

from .checkpoint import human_bytes, state_bytes

# Bytes a torch.save zip archive spends on each tensor beside its data (local and central
# directory entries, 64-byte alignment, pickled key and storage record); measured with torch 2.x.
TENSOR_OVERHEAD = 320

logger = logging.getLogger("cadet_d2")


class PreflightError(RuntimeError):
    """The run cannot work as configured (e.g. OUTPUT_DIR is not writable)."""


def check_output_dir(path: str) -> None:
    """Create ``path`` if needed and check that a file can be written in it (then removed)."""
    if not path:
        raise PreflightError("OUTPUT_DIR is empty; set it to a writable folder")
    try:
        os.makedirs(path, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".cadet_write_test.")
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise PreflightError(
            f"OUTPUT_DIR {path!r} is not a writable folder ({e.strerror or e}); set OUTPUT_DIR to a folder "
            "this user can create files in"
        ) from None


class _CountingSink:
    """A write-only file that keeps only the number of bytes written to it."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, b) -> int:
        self.n += len(b)
        return len(b)

    def flush(self) -> None:
        pass


def serialized_bytes(obj) -> int:
    """Bytes ``torch.save(obj, f)`` writes (counted, not stored)."""
    sink = _CountingSink()
    torch.save(obj, sink)
    return sink.n


def optimizer_moments(optimizer: torch.optim.Optimizer, group: dict) -> int:
    """State tensors of the parameters' size that ``optimizer`` keeps per parameter of ``group``."""
    if isinstance(optimizer, torch.optim.SGD):
        return 1 if group.get("momentum", 0) else 0
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return 3 if group.get("amsgrad", False) else 2
    return 2  # other optimizers: assume two moments (Adam-like)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes the optimizer's per-parameter state will take in a checkpoint, from the parameter
    shapes (the state itself exists only after the first step)."""
    adam = isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
    total = 0
    for group in optimizer.param_groups:
        n = optimizer_moments(optimizer, group)
        for p in group["params"]:
            if not p.requires_grad or n == 0:
                continue
            total += n * (p.numel() * p.element_size() + TENSOR_OVERHEAD)
            if adam:  # the step count: a float32 scalar tensor per parameter
                total += 4 + TENSOR_OVERHEAD
    return total


@dataclass
class CheckpointSize:
    """One checkpoint's bytes: ``total = states + optimizer``."""

    states: int  # model, scheduler, grad scaler, RNG, stream, ...: serialised once
    optimizer: int  # optimizer's per-parameter state, from the parameter shapes
    weights: int  # the model's tensors alone (part of ``states``)

    @property
    def total(self) -> int:
        return self.states + self.optimizer

    def describe(self) -> str:
        return (f"{human_bytes(self.total)} ({human_bytes(self.weights)} of weights, {human_bytes(self.optimizer)} "
                f"of optimizer state, {human_bytes(self.states - self.weights)} other)")


def checkpoint_size(checkpointer, optimizer: torch.optim.Optimizer) -> CheckpointSize:
    """Size of the checkpoints ``checkpointer`` (a :class:`~cadet_d2.engine.checkpoint.CadetCheckpointer`)
    will write for a run optimised by ``optimizer``."""
    data = {"model": checkpointer.model.state_dict()}
    data.update({k: obj.state_dict() for k, obj in checkpointer.checkpointables.items()})
    data["iteration"] = 0
    optimizer_now = state_bytes(optimizer.state_dict()["state"])  # non-zero after a step
    return CheckpointSize(states=serialized_bytes(data) - optimizer_now, optimizer=optimizer_state_bytes(optimizer),
                          weights=state_bytes(data["model"]))


def checkpoints_kept(max_iter: int, period: int, keep_last: int) -> int:
    """``model_<iteration>.pth`` files a run of ``max_iter`` iterations leaves with a checkpoint
    every ``period`` and ``keep_last`` (0: all), not counting ``model_final.pth``."""
    periodic = max_iter // period if period > 0 else 0
    return min(periodic, keep_last) if keep_last > 0 else periodic


def _existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_free_space(path: str, need_bytes: int, what: str = "a checkpoint") -> None:
    """Raise :class:`PreflightError` naming ``path`` if its disk has less than ``need_bytes`` free
    (measured at ``path`` or, before it is created, at its nearest existing parent)."""
    free = shutil.disk_usage(_existing(path)).free
    if free < need_bytes:
        raise PreflightError(
            f"not enough free disk space in OUTPUT_DIR {path!r}: {human_bytes(free)} free, {what} needs about "
            f"{human_bytes(need_bytes)}; free some space, set CADET.CHECKPOINT.KEEP_LAST, or set OUTPUT_DIR to "
            "another disk"
        )


def check_room_for_checkpoints(cfg, checkpointer, optimizer: torch.optim.Optimizer) -> int:
    """Check ``checkpointer.save_dir`` has room for every checkpoint the run keeps at once
    (``SOLVER.MAX_ITER``, ``SOLVER.CHECKPOINT_PERIOD``, ``CADET.CHECKPOINT.KEEP_LAST``) plus the
    transient copy an atomic save writes beside them; returns that need in bytes."""
    size = checkpoint_size(checkpointer, optimizer)
    keep = int(cfg.CADET.CHECKPOINT.KEEP_LAST)
    kept = checkpoints_kept(int(cfg.SOLVER.MAX_ITER), int(cfg.SOLVER.CHECKPOINT_PERIOD), keep)
    # the files kept at once (periodic ones and model_final.pth), and the transient copy of the one
    # being written (an atomic save writes it beside the file it replaces; a stop signal may add one)
    need = (kept + 1) * size.total + size.total
    check_free_space(
        checkpointer.save_dir, need,
        what=f"this run ({kept} periodic checkpoint(s) kept (CADET.CHECKPOINT.KEEP_LAST {keep}) and model_final.pth, "
             f"{size.describe()} each, plus the transient copy of {human_bytes(size.total)} an atomic save writes "
             "beside them)")
    logger.info(f"[cadet] checkpoints: {size.describe()} each; an atomic save writes a transient copy of "
                f"{human_bytes(size.total)}; this run needs up to {human_bytes(need)} in {checkpointer.save_dir} "
                f"({kept} periodic checkpoint(s) kept, CADET.CHECKPOINT.KEEP_LAST {keep})")
    return need
