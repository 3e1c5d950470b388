"""Keep some parameters at their starting values for the first iterations of a run.

:class:`KeepFrozen` (a hook; ``CADET.INIT.FREEZE_ITERS`` with ``CADET.INIT.RGB_DETECTOR``): the
parameters copied from the RGB detector into their own place keep its values while the
auxiliary stream and the fusion modules learn. The parameters stay trainable (DDP and the
optimizer see the same set throughout); after each optimizer step of iterations
0 .. N-1 they are set back to their values at the start. When they are released, their
optimizer state (momentum, Adam moments gathered while frozen) is cleared, so that they start
moving from rest. A run resumed during the freeze holds the same values (they are the
checkpoint's), so resume stays exact.
"""
from __future__ import annotations

import logging

import torch
from detectron2.engine import HookBase

logger = logging.getLogger("cadet_d2")


class KeepFrozen(HookBase):
    """Parameters ``names`` of ``model`` (DDP-wrapped or not) keep their values of the start of
    training during iterations ``0 .. iters - 1``."""

    def __init__(self, model: torch.nn.Module, names: list[str], iters: int):
        self.model = getattr(model, "module", model)
        self.names, self.iters = list(names), int(iters)
        self.saved: dict[str, tuple[torch.nn.Parameter, torch.Tensor]] = {}

    @classmethod
    def from_config(cls, cfg, model: torch.nn.Module) -> "KeepFrozen | None":
        """The hook of ``CADET.INIT.FREEZE_ITERS`` (None when 0, or when the model did not start
        from the RGB detector because MODEL.WEIGHTS was given)."""
        from ..modeling.init_from_rgb import kept_in_place

        report = getattr(getattr(model, "module", model), "rgb_init_report", None)
        if not cfg.CADET.INIT.FREEZE_ITERS or report is None:
            return None
        return cls(model, kept_in_place(report), cfg.CADET.INIT.FREEZE_ITERS)

    def before_train(self) -> None:
        if self.trainer.iter >= self.iters:
            return
        params = dict(self.model.named_parameters())
        self.saved = {n: (params[n], params[n].detach().clone()) for n in self.names if n in params}
        count = sum(p.numel() for p, _ in self.saved.values())
        logger.info(f"[cadet] {len(self.saved)} tensors ({count / 1e6:.2f}M values) copied from the RGB detector "
                    f"stay frozen until iteration {self.iters} (CADET.INIT.FREEZE_ITERS)")

    def after_step(self) -> None:
        if not self.saved:
            return
        with torch.no_grad():
            for p, value in self.saved.values():
                p.copy_(value)
        if self.trainer.iter + 1 >= self.iters:
            for p, _ in self.saved.values():
                self.trainer.optimizer.state.pop(p, None)
            logger.info(f"[cadet] iteration {self.trainer.iter}: the tensors copied from the RGB detector "
                        "are released (their optimizer state cleared)")
            self.saved = {}
