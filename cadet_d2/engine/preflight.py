"""Checks run before training starts, so that a run fails in seconds rather than at its first
checkpoint hours later: OUTPUT_DIR must be writable and have room for checkpoints."""
from __future__ import annotations

import os
import shutil
import tempfile

import torch

# A checkpoint holds the weights plus the optimizer state (SGD momentum: 1x, AdamW: 2x), and an
# atomic save needs room for the new file while the previous one still exists.
CHECKPOINT_SIZE_FACTOR = 3


class PreflightError(RuntimeError):
    """The run cannot work as configured (e.g. OUTPUT_DIR is not writable)."""


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


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


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


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
            f"not enough free disk space in OUTPUT_DIR {path!r}: {_human(free)} free, {what} needs about "
            f"{_human(need_bytes)}; free some space or set OUTPUT_DIR to another disk"
        )


def check_room_for_checkpoints(path: str, model: torch.nn.Module) -> int:
    """Check ``path`` has room for about ``CHECKPOINT_SIZE_FACTOR`` x the model's bytes; returns that need."""
    size = model_bytes(model)
    need = CHECKPOINT_SIZE_FACTOR * size
    check_free_space(path, need, what=f"a checkpoint of this model ({CHECKPOINT_SIZE_FACTOR} x {_human(size)} "
                                       "of weights: weights, optimizer state, room for the atomic save)")
    return need
