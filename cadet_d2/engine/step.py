"""``AccumAMPTrainer``: Detectron2's training step with gradient accumulation and any AMP dtype.

Detectron2 v0.6's ``SimpleTrainer`` runs one batch per step in fp32 and its ``AMPTrainer``
autocasts to fp16 only, on CUDA only. This trainer (a ``TrainerBase``, the step of every
precision: fp32, fp16 with a grad scaler, bf16) runs one optimizer step per iteration over
``accum_steps`` micro-batches:

* each micro-batch is drawn from the data loader (``SOLVER.IMS_PER_BATCH`` images over all
  processes), run under the :class:`~cadet_d2.engine.precision.Precision`'s autocast (fp32,
  fp16 or bf16), and its loss divided by ``accum_steps`` is back-propagated, so the summed
  gradient is the mean of the micro-batch gradients;
* with DDP, gradients are all-reduced once, on the last micro-batch (``no_sync`` before);
* fp16 scales the loss with a ``GradScaler`` (saved in checkpoints under ``grad_scaler``, as
  Detectron2's AMPTrainer does); bf16 and fp32 need none;
* the logged losses are the mean over the micro-batches, ``data_time`` their sum; a non-finite
  loss stops the step before the optimizer updates anything (Detectron2's check).

With ``accum_steps`` 1 and fp32 the step is exactly ``SimpleTrainer.run_step``. The batches come
from ``iter(self.data_loader)``, created at the first step (so a loader may be replaced or
wrapped until then, and resuming can set its start first).
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator

import torch
from detectron2.engine import TrainerBase
from torch.nn.parallel import DistributedDataParallel

from .compat import write_metrics
from .precision import Precision


class AccumAMPTrainer(TrainerBase):
    """One optimizer step over ``accum_steps`` micro-batches, autocast with ``precision``.

    ``model``: returns a dict of scalar losses in training mode; ``data_loader``: an iterable
    of batches (lists of dicts); ``grad_scaler``: fp16's (default: ``precision.grad_scaler()``).
    """

    def __init__(self, model: torch.nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer, *,
                 accum_steps: int = 1, precision: Precision | None = None,
                 grad_scaler: torch.amp.GradScaler | None = None):
        if accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
        super().__init__()
        model.train()
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        self.batches: Iterator | None = None  # iter(data_loader), from the first step on
        device_type = next(model.parameters()).device.type
        self.precision = precision or Precision(device_type)
        self.accum_steps = int(accum_steps)
        self.grad_scaler = grad_scaler if grad_scaler is not None else self.precision.grad_scaler()

    def _no_sync(self, micro: int) -> contextlib.AbstractContextManager:
        last = micro == self.accum_steps - 1
        if not last and isinstance(self.model, DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def run_step(self) -> None:
        assert self.model.training, "[AccumAMPTrainer] model was changed to eval mode!"
        n = self.accum_steps
        data_time = 0.0
        logged: dict[str, torch.Tensor] = {}
        if self.batches is None:
            self.batches = iter(self.data_loader)
        self.optimizer.zero_grad()
        for micro in range(n):
            start = time.perf_counter()
            data = next(self.batches)
            data_time += time.perf_counter() - start
            with self._no_sync(micro):
                with self.precision.autocast():
                    loss_dict = self.model(data)
                    if isinstance(loss_dict, torch.Tensor):
                        loss_dict = {"total_loss": loss_dict}
                    losses = sum(loss_dict.values())
                if n > 1:
                    losses = losses / n
                if self.grad_scaler is not None:
                    self.grad_scaler.scale(losses).backward()
                else:
                    losses.backward()
            for k, v in loss_dict.items():
                v = v.detach().float()
                logged[k] = logged[k] + v / n if k in logged else (v / n if n > 1 else v)
        write_metrics(logged, data_time, self.iter)  # raises FloatingPointError before the update
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)  # unscales first: gradient clipping sees true grads
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self) -> dict:
        """The iteration, the optimizer state and (fp16) the grad scaler's, as Detectron2's
        ``AMPTrainer.state_dict``."""
        ret = super().state_dict()
        ret["optimizer"] = self.optimizer.state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict["optimizer"])
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
