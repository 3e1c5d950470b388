"""What differs between Detectron2 v0.6 (the PyPI sdist) and current Detectron2 (commit 02b5c4e,
June 2026), in one place. The engine calls these functions and uses nothing else of Detectron2
that changed between the two.

Differences the engine avoids instead of bridging (no code here):

* ``SimpleTrainer._data_loader_iter``: v0.6 sets it in ``__init__`` (creating the loader's
  iterator, and so its workers, at once); current Detectron2 makes it a read-only property
  that creates the iterator at the first step. :class:`~cadet_d2.engine.step.AccumAMPTrainer`
  therefore derives from ``TrainerBase`` and keeps its own iterator.
* ``AMPTrainer(grad_scaler=..., precision=..., log_grad_scaler=...)``: current Detectron2
  added keyword arguments (and fp16 only in v0.6). The engine uses ``AccumAMPTrainer`` with a
  :class:`~cadet_d2.engine.precision.Precision` for every precision.
* ``DefaultTrainer.state_dict``: current Detectron2 adds the step trainer's state (optimizer,
  grad scaler) under ``"_trainer"``; v0.6 saves only the iteration and the hooks' states. The
  engine does not use ``DefaultTrainer``; its checkpoints hold ``optimizer`` and ``scheduler``
  as entries of their own (:func:`legacy_trainer_state` reads the older layouts).
* ``EvalHook(eval_after_train=...)``: current Detectron2 only. The engine's evaluation hook
  decides about the final evaluation itself.
* ``build_detection_train_loader`` / ``build_detection_test_loader`` take no ``worker_init_fn``
  in v0.6. Their workers are shielded from stop signals by a signal mask instead
  (:class:`~cadet_d2.data.workers.WorkerSafeLoader`).
"""
from __future__ import annotations

from typing import Any

from detectron2.engine import SimpleTrainer
from detectron2.utils import comm

# Current Detectron2 creates the per-machine group through a public function; v0.6 cannot.
HAS_LOCAL_PROCESS_GROUP = hasattr(comm, "create_local_process_group")

# Keys of the LR scheduler hook's state in TrainerBase.state_dict()["hooks"] (both versions).
_LR_HOOK_KEY = "detectron2.engine.hooks.LRScheduler"


def _write_metrics_takes_iteration() -> bool:
    import inspect

    return "cur_iter" in inspect.signature(SimpleTrainer.write_metrics).parameters


_WRITE_METRICS_TAKES_ITER = _write_metrics_takes_iteration()


def write_metrics(loss_dict: dict, data_time: float, iteration: int, prefix: str = "") -> None:
    """``SimpleTrainer.write_metrics``: reduce the losses over ranks and log them (main rank);
    ``FloatingPointError`` on a non-finite total loss."""
    if _WRITE_METRICS_TAKES_ITER:  # current Detectron2: write_metrics(loss_dict, data_time, cur_iter, prefix)
        SimpleTrainer.write_metrics(loss_dict, data_time, iteration, prefix)
    else:  # v0.6: write_metrics(loss_dict, data_time, prefix), at the storage's iteration
        SimpleTrainer.write_metrics(loss_dict, data_time, prefix)


def create_local_process_group(num_per_machine: int) -> bool:
    """Detectron2's group of the ranks on this machine, behind ``comm.get_local_rank()``, where
    Detectron2 has a public function for it (every rank must call this). Returns whether it did.

    Current Detectron2: ``comm.create_local_process_group``. v0.6 has none (its own ``launch``
    sets a module variable), so there ``comm.get_local_rank()`` stays unavailable under
    cadet_d2's launch; :func:`cadet_d2.engine.launch.local_rank` works with both, and the engine
    needs neither (:mod:`cadet_d2.engine.ddp` passes the device ids itself).
    """
    if not HAS_LOCAL_PROCESS_GROUP:  # v0.6
        return False
    comm.create_local_process_group(num_per_machine)
    return True


def legacy_trainer_state(trainer_state: dict) -> dict[str, Any]:
    """Optimizer, grad-scaler and scheduler states held in the ``trainer`` entry of a checkpoint
    that has no ``optimizer`` entry of its own: written by cadet_d2's earlier DefaultTrainer-based
    engine or by current Detectron2's DefaultTrainer (``"_trainer"``), or by v0.6's (scheduler
    only, under the LR scheduler hook). Returns ``{"optimizer": ..., "grad_scaler": ...,
    "scheduler": ...}`` with the states found."""
    found: dict[str, Any] = {}
    step = trainer_state.get("_trainer") or {}
    for key in ("optimizer", "grad_scaler"):
        if key in step:
            found[key] = step[key]
    hooks_state = trainer_state.get("hooks") or {}
    if hooks_state.get(_LR_HOOK_KEY):
        found["scheduler"] = hooks_state[_LR_HOOK_KEY]
    return found
