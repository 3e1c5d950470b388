"""Checkpoints for long runs: atomic saves, no non-finite weights, clear write failures, safe
loading, fallback on resume, bounded disk use, RNG state.

* :class:`CadetCheckpointer` (a ``DetectionCheckpointer``) writes each checkpoint to a temporary
  file in the same folder, fsyncs it and renames it over the final name (``os.replace``), then
  does the same for ``last_checkpoint``. A kill at any moment leaves the previous checkpoint and
  ``last_checkpoint`` intact. It refuses to save weights or optimizer state holding NaN/inf
  (``FloatingPointError``) and refuses every save after :meth:`CadetCheckpointer.block_saves`
  (called by the trainer on a non-finite loss).
* A write that fails (disk full, permission lost, folder removed) raises one
  :class:`CheckpointWriteError` naming the file, the bytes needed and free, the last good
  checkpoint and how to resume; the temporary file is removed and ``last_checkpoint`` still
  names the previous, intact checkpoint.
* ``keep_last`` N > 0 keeps only the N newest ``model_<iteration>.pth`` files (``model_final.pth``
  and other names are never removed); 0 keeps all.
* On resume, a last checkpoint that does not load (truncated, damaged) is reported with its
  reason and the newest one that loads is used instead (also when ``last_checkpoint`` itself is
  missing: a kill between a save and its record); with none, :class:`NoLoadableCheckpointError`
  lists every file tried.
* Loading never unpickles arbitrary objects (:mod:`cadet_d2.utils.safe_load`).
* :class:`RNGState` saves and restores every rank's global RNG states
  (:mod:`cadet_d2.utils.rng`), so a resume continues the model's own randomness (drop path, ROI
  sampling) exactly.
"""
from __future__ import annotations

import errno
import glob
import logging
import os
import re
import shutil
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..utils.io import atomic_write, atomic_write_bytes, require_weights_file
from ..utils.rng import capture_rng_state, preserved_rng_state, restore_rng_state
from ..utils.safe_load import (CorruptCheckpointError, UnsafeCheckpointError, load_pickle_arrays,
                               load_torch_weights)

__all__ = [
    "CadetCheckpointer", "CheckpointWriteError", "CorruptCheckpointError", "GatherResumeState",
    "NoLoadableCheckpointError", "RNGState", "UnsafeCheckpointError", "atomic_torch_save", "capture_rng_state",
    "human_bytes", "nonfinite_tensors", "preserved_rng_state", "restore_rng_state", "state_bytes",
]

logger = logging.getLogger("cadet_d2")

PERIODIC_NAME = re.compile(r"^model_(\d+)\.pth$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message says what, where, and how to resume."""


class NoLoadableCheckpointError(RuntimeError):
    """``--resume`` found checkpoints in OUTPUT_DIR but none of them loads."""


def human_bytes(n: float) -> str:
    """``n`` bytes as B / KiB / MiB / GiB / TiB with one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---- saving ---------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``
    (:func:`~cadet_d2.utils.io.atomic_write`): a kill leaves ``path`` as it was; a leftover hidden
    ``.<name>.*.tmp`` file is removed by the next resume."""
    atomic_write(path, lambda f: torch.save(obj, f))


def nonfinite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nested dict/list holding NaN or inf."""
    bad: list[str] = []
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            if not bool(torch.isfinite(obj).all()):
                bad.append(prefix or "<tensor>")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += nonfinite_tensors(v, f"{prefix}[{i}]")
    return bad


def state_bytes(obj: Any) -> int:
    """Bytes of the tensor data in a nested dict/list (a lower bound of its ``torch.save`` size)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def _free_bytes(folder: str) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _os_error(e: BaseException) -> BaseException:
    """The OSError behind ``e`` (torch.save reports a failed write as a RuntimeError whose context is
    the OSError), else ``e``."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return e


def _what_failed(e: BaseException, folder: str) -> str:
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC or "No space left" in str(e):
        return "the disk is full"
    if code == errno.EDQUOT:
        return "the disk quota is exceeded"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission to write there was lost"
    if not os.path.isdir(folder):
        return "the output folder no longer exists"
    return "the write failed"


# ---- the checkpointer -------------------------------------------------------------------------
class CadetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic, finite-only saves, clear write failures, retention of the
    ``keep_last`` newest periodic checkpoints, safe (weights-only) loading and resume fallback."""

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, save_to_disk: bool | None = None,
                 keep_last: int = 0, **checkpointables: Any):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.blocked_reason: str | None = None
        self.keep_last = int(keep_last)
        self.preread: tuple[str, dict] | None = None  # (path, content) read while choosing a resume file
        self.loaded_file = ""  # the file resume_or_load loaded ("" when none)

    def block_saves(self, reason: str) -> None:
        """Refuse every later save (e.g. after a non-finite loss), logging ``reason``."""
        self.blocked_reason = reason

    def has_checkpoint(self) -> bool:
        """``last_checkpoint`` exists, or (a kill between a save and its record) a periodic checkpoint does."""
        return super().has_checkpoint() or bool(self.periodic_checkpoints())

    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names; without it, the newest periodic checkpoint ("" if none)."""
        if super().has_checkpoint():
            return super().get_checkpoint_file()
        files = self.periodic_checkpoints()
        return files[-1] if files else ""

    def last_good(self) -> str:
        """The file ``last_checkpoint`` names, or ``"none"``."""
        return self.get_checkpoint_file() if self.has_checkpoint() else "none"

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        basename = f"{name}.pth"
        if self.blocked_reason:
            self.logger.error(f"[cadet] checkpoint {basename} not written: {self.blocked_reason}")
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        bad = nonfinite_tensors(data)
        if bad:
            last = self.last_good()
            self.block_saves(f"non-finite values in {bad[0]}")
            raise FloatingPointError(
                f"[cadet] not saving checkpoint {basename}: NaN/inf in {len(bad)} tensor(s) "
                f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}). Training stopped; the last good "
                f"checkpoint ({last}) is kept. Lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS."
            )
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        try:
            self.write_file(data, path)
            self.tag_last_checkpoint(basename)
        except (OSError, RuntimeError) as e:
            raise CheckpointWriteError(self.write_failure(path, e, state_bytes(data))) from None
        self.remove_old_checkpoints()

    def write_file(self, data: dict, path: str) -> None:
        """Write one checkpoint's ``data`` to ``path`` atomically."""
        atomic_torch_save(data, path)

    def write_failure(self, path: str, e: BaseException, need: int) -> str:
        """The one message of a failed write of ``path`` (``need``: bytes of its tensors)."""
        folder = os.path.dirname(path)
        free = _free_bytes(folder)
        e = _os_error(e)
        reason = (getattr(e, "strerror", None) or str(e).splitlines()[0]).strip()
        last = self.last_good()
        return (
            f"[cadet] checkpoint not written: {_what_failed(e, folder)} ({reason}) while writing {path}. "
            f"It needs about {human_bytes(need)} (and the atomic save that much again while the previous file "
            f"exists); {human_bytes(free) + ' free' if free is not None else 'free space unknown'} there. "
            f"Nothing was lost: no temporary file is left and the last good checkpoint, {last}, is intact "
            "(last_checkpoint names it). Free some space (or set CADET.CHECKPOINT.KEEP_LAST) and rerun the "
            "same command with --resume."
        )

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename.encode("utf-8"))

    def periodic_checkpoints(self) -> list[str]:
        """The ``model_<iteration>.pth`` files of ``save_dir``, oldest first."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        found = [(int(m.group(1)), f) for f in os.listdir(self.save_dir) if (m := PERIODIC_NAME.match(f))]
        return [os.path.join(self.save_dir, f) for _, f in sorted(found)]

    def remove_old_checkpoints(self) -> list[str]:
        """With ``keep_last`` N > 0, remove all but the N newest periodic checkpoints (never the one
        ``last_checkpoint`` names); returns the removed paths."""
        if self.keep_last <= 0:
            return []
        last = self.get_checkpoint_file() if self.has_checkpoint() else None
        old = [p for p in self.periodic_checkpoints()[:-self.keep_last] if p != last]
        for p in old:
            try:
                os.remove(p)
                self.logger.info(f"[cadet] removed {p} (CADET.CHECKPOINT.KEEP_LAST {self.keep_last})")
            except OSError as e:
                self.logger.warning(f"[cadet] could not remove old checkpoint {p}: {e.strerror or e}")
        return old

    def remove_stale_temp_files(self) -> list[str]:
        """Remove the temporary files of saves that a kill interrupted; returns their paths."""
        stale = glob.glob(os.path.join(glob.escape(self.save_dir), ".*.tmp")) if self.save_dir else []
        for p in stale:
            try:
                os.remove(p)
                self.logger.info(f"[cadet] removed {p} (left by an interrupted checkpoint save)")
            except OSError:
                pass
        return stale

    # ---- loading -------------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """Detectron2's resume_or_load; on resume, the newest checkpoint that loads (:meth:`resume_file`).
        The file loaded ("" for none) is kept as ``loaded_file``. A local ``path`` (``MODEL.WEIGHTS``)
        that is missing or a folder stops, naming it."""
        if not (resume and self.has_checkpoint()):
            if path:
                require_weights_file("MODEL.WEIGHTS", path, urls=True)
            self.loaded_file = path
            return super().resume_or_load(path, resume=resume)
        self.loaded_file = self.resume_file()
        return self.load(self.loaded_file)

    def resume_file(self) -> str:
        """The file ``last_checkpoint`` names if it loads, else the newest periodic checkpoint that
        does (each failure warned with its reason); :class:`NoLoadableCheckpointError` if none."""
        last = self.get_checkpoint_file()
        if not super().has_checkpoint():
            self.logger.warning(f"[cadet] {os.path.join(self.save_dir, 'last_checkpoint')} is missing (the run was "
                                "killed between a save and its record?): trying the newest periodic checkpoint")
        candidates = [last] + [p for p in reversed(self.periodic_checkpoints()) if p != last]
        tried: list[str] = []
        for p in candidates:
            try:
                content = self.read_file(p)
                if not isinstance(content.get("model"), dict):
                    raise CorruptCheckpointError(f"{p}: holds no model weights")
            except (CorruptCheckpointError, UnsafeCheckpointError, OSError, RuntimeError, ValueError) as e:
                reason = str(e).removeprefix(f"{p}: ")
                tried.append(f"{p}: {reason}")
                self.logger.warning(f"[cadet] cannot resume from {p}: {reason}"
                                    + ("; trying the previous checkpoint" if p != candidates[-1] else ""))
                continue
            self.preread = (p, content)
            it = content.get("iteration")
            where = f"iteration {it}; training continues at iteration {it + 1}" if isinstance(it, int) else \
                "no iteration recorded"
            (self.logger.warning if tried else self.logger.info)(f"[cadet] resuming from {p} ({where})")
            return p
        raise NoLoadableCheckpointError(
            f"[cadet] --resume: no checkpoint in {self.save_dir} loads; tried, newest first:\n  "
            + "\n  ".join(tried)
            + "\nRemove the damaged files, or start afresh without --resume or with another OUTPUT_DIR."
        )

    def read_file(self, filename: str) -> dict:
        """The content of a weights/checkpoint file as a dict with a ``model`` entry, read without
        unpickling arbitrary objects."""
        if self.preread is not None and self.preread[0] == filename:
            content, self.preread = self.preread[1], None
            return content
        if filename.endswith(".pkl"):
            data = load_pickle_arrays(filename)
            if not isinstance(data, dict):
                raise UnsafeCheckpointError(f"{filename}: expected a dict of weights, got {type(data).__name__}")
            if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
                return data
            blobs = data.get("blobs", data)  # Caffe2 / Detectron1 format
            blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}
        loaded = load_torch_weights(filename)
        if not isinstance(loaded, dict):
            raise UnsafeCheckpointError(f"{filename}: expected a dict of weights, got {type(loaded).__name__}")
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in loaded:
                raise ValueError(f"{filename}: pycls checkpoints (.pyth) must contain 'model_state'")
            state = {k: v for k, v in loaded["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return loaded if "model" in loaded else {"model": loaded}

    def _load_file(self, filename: str) -> dict:  # fvcore's hook for reading a file
        return self.read_file(filename)


# ---- RNG state ------------------------------------------------------------------------------
class RNGState:
    """Checkpointable global RNG states of every rank (``checkpointer.checkpointables["rng"]``).

    With one process the state is captured when the checkpoint is written. With several,
    :class:`GatherResumeState` gathers every rank's state just before the checkpointer hook
    (which runs on the main process only), and each rank restores its own entry.
    """

    def __init__(self) -> None:
        self._gathered: list[dict] | None = None
        self.restored = False

    def gather(self) -> None:
        self._gathered = comm.all_gather(capture_rng_state())

    def drop_gathered(self) -> None:
        self._gathered = None

    def state_dict(self) -> dict:
        # kept until GatherResumeState.before_step: one iteration may save twice (periodic + final)
        per_rank = self._gathered or [capture_rng_state()]
        return {"version": 1, "per_rank": per_rank}

    def load_state_dict(self, state: dict) -> None:
        per_rank, rank = state["per_rank"], comm.get_rank()
        if rank >= len(per_rank):
            logger.warning(f"[cadet] the checkpoint holds RNG states of {len(per_rank)} rank(s); rank {rank} "
                           "keeps its own (not an exact resume)")
            return
        restore_rng_state(per_rank[rank])
        self.restored = True


class GatherResumeState(HookBase):
    """Multi-process runs: gather every rank's resume state before a checkpoint is written.

    Registered on every rank before the ``PeriodicCheckpointer`` hook; runs the collective at
    the iterations at which that hook saves.
    """

    def __init__(self, period: int, *objects: Any):
        self.period, self.objects = int(period), objects

    def before_step(self) -> None:
        for obj in self.objects:  # the states gathered at the previous iteration are stale now
            obj.drop_gathered()

    def after_step(self) -> None:
        it, max_iter = self.trainer.iter, self.trainer.max_iter
        if comm.get_world_size() > 1 and ((it + 1) % self.period == 0 or it >= max_iter - 1):
            for obj in self.objects:
                obj.gather()
