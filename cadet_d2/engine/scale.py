"""``ScaleTrainerMixin``: precision, gradient accumulation and CPU DDP for ``DefaultTrainer``.

Used as ``class CadetTrainer(ScaleTrainerMixin, ReliableTrainerMixin, DefaultTrainer)``. After
Detectron2 has built the trainer it

* swaps Detectron2's step (``SimpleTrainer`` or fp16-only, CUDA-only ``AMPTrainer``) for
  :class:`~cadet_d2.engine.step.AccumAMPTrainer` when ``SOLVER.ACCUM_STEPS`` > 1 or the AMP
  dtype is bf16 (plain fp32 and fp16 without accumulation keep Detectron2's own step);
* logs the effective batch (``IMS_PER_BATCH * ACCUM_STEPS`` images per optimizer step);
* lets Detectron2 wrap a CPU model in DDP (``gloo``; see :mod:`cadet_d2.engine.ddp`).

Iterations, ``MAX_ITER``, LR schedule, checkpoints and evaluation periods all count optimizer
steps.
"""
from __future__ import annotations

import logging
import warnings

import torch
from detectron2.utils import comm

from .ddp import ddp_on_any_device
from .precision import resolve_precision
from .step import AccumAMPTrainer

logger = logging.getLogger("cadet_d2")


class ScaleTrainerMixin:
    """Mixin for ``DefaultTrainer`` subclasses (put it first in the bases)."""

    def __init__(self, cfg):
        precision = resolve_precision(cfg)  # fails early on an impossible precision
        accum = int(cfg.SOLVER.ACCUM_STEPS)
        replace = accum > 1 or precision.dtype == torch.bfloat16  # fp16 alone: Detectron2's AMPTrainer
        with ddp_on_any_device(), warnings.catch_warnings():
            if replace:  # Detectron2's AMPTrainer, about to be replaced, warns about its CUDA grad scaler
                warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler")
            super().__init__(cfg)
        if replace:
            old = self._trainer
            self._trainer = AccumAMPTrainer(old.model, old.data_loader, old.optimizer, accum_steps=accum,
                                            precision=precision)
        ims, world = self.cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size()
        logger.info(f"[cadet] precision {precision.name}"
                    f"{' with a grad scaler' if precision.use_grad_scaler else ''}; {accum} micro-batch(es) of "
                    f"{ims} image(s) ({ims // world} per process x {world}) per optimizer step: effective batch "
                    f"{ims * accum} images")
