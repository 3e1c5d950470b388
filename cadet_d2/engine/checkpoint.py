"""Checkpoints for long runs: atomic saves, no non-finite weights, safe loading, RNG state.

* :class:`CadetCheckpointer` (a ``DetectionCheckpointer``) writes each checkpoint to a temporary
  file in the same folder, fsyncs it and renames it over the final name (``os.replace``), then
  does the same for ``last_checkpoint``. A kill at any moment leaves the previous checkpoint and
  ``last_checkpoint`` intact. It refuses to save weights or optimizer state holding NaN/inf
  (``FloatingPointError``) and refuses every save after :meth:`CadetCheckpointer.block_saves`
  (called by the trainer on a non-finite loss).
* Loading never unpickles arbitrary objects: ``.pth`` files go through
  ``torch.load(weights_only=True)``, Detectron2 ``.pkl`` model-zoo files through an unpickler that
  only knows numpy arrays and plain containers. A file that needs more stops with
  :class:`UnsafeCheckpointError` saying so.
* :class:`RNGState` saves and restores torch's (CPU and current CUDA device), numpy's and
  python's global RNG states as tensors and plain numbers, so a resume continues the model's own
  randomness (drop path, ROI sampling) exactly; it loads with ``weights_only=True`` too.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import pickle
import random
from typing import Any, Iterator

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..utils.io import atomic_write, atomic_write_bytes

logger = logging.getLogger("cadet_d2")


class UnsafeCheckpointError(RuntimeError):
    """A weights file holds pickled Python objects that cadet_d2 will not unpickle."""


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


# ---- loading ----------------------------------------------------------------------------------
_PICKLE_ALLOWED = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only numpy arrays and plain containers)")


def load_pickle_arrays(path: str) -> Any:
    """Unpickle a Detectron2/Caffe2 ``.pkl`` weights file allowing numpy arrays and containers only."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: not loaded: the .pkl file holds Python objects other than numpy arrays ({e}); cadet_d2 "
            "never unpickles arbitrary objects, since that can run code from the file. If you trust the file, "
            "convert its weights to a .pth state dict of tensors."
        ) from None


def _weights_only_reason(e: Exception) -> str:
    text = str(e)
    for marker in ("Unsupported global:", "WeightsUnpickler error:"):
        if marker in text:
            return text[text.index(marker):].split("\n")[0].strip()
    return text.strip().split("\n")[0][:300]


def load_torch_weights(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with clear errors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: not loaded: the file holds pickled Python objects beyond tensors and plain containers "
            f"({_weights_only_reason(e)}). cadet_d2 loads weights with torch.load(weights_only=True) so that a "
            "file cannot run code. If you trust the file, re-save only its weights, e.g.\n"
            "  python -c \"import torch; c = torch.load('IN', weights_only=False); "
            "torch.save({'model': c.get('model', c)}, 'OUT.pth')\""
        ) from None
    except RuntimeError as e:
        if "zip archive" in str(e) or "PytorchStreamReader" in str(e):
            raise RuntimeError(f"{path}: corrupt or truncated checkpoint ({str(e).splitlines()[0]})") from None
        raise


class CadetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic, finite-only saves and safe (weights-only) loading."""

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, save_to_disk: bool | None = None,
                 **checkpointables: Any):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.blocked_reason: str | None = None

    def block_saves(self, reason: str) -> None:
        """Refuse every later save (e.g. after a non-finite loss), logging ``reason``."""
        self.blocked_reason = reason

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
            last = self.get_checkpoint_file() if self.has_checkpoint() else "none"
            self.block_saves(f"non-finite values in {bad[0]}")
            raise FloatingPointError(
                f"[cadet] not saving checkpoint {basename}: NaN/inf in {len(bad)} tensor(s) "
                f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}). Training stopped; the last good "
                f"checkpoint ({last}) is kept. Lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS."
            )
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename.encode("utf-8"))

    def remove_stale_temp_files(self) -> list[str]:
        """Remove the temporary files of saves that a kill interrupted; returns their paths."""
        stale = glob.glob(os.path.join(glob.escape(self.save_dir), ".*.tmp")) if self.save_dir else []
        for p in stale:
            with contextlib.suppress(OSError):
                os.remove(p)
                self.logger.info(f"[cadet] removed {p} (left by an interrupted checkpoint save)")
        return stale

    def _load_file(self, filename: str) -> dict:
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


# ---- RNG state ------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """This process's global RNG states, as tensors and plain numbers (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run a block (e.g. an evaluation) without changing any global RNG state."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


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
