"""Training precision from the config: fp32, fp16 autocast + grad scaler (CUDA), bf16 autocast.

``SOLVER.AMP.ENABLED`` turns autocast on; ``CADET.SOLVER.AMP_DTYPE`` picks its dtype:

* ``float16``: CUDA only, with a ``GradScaler`` (what Detectron2's AMPTrainer does);
* ``bfloat16``: CUDA (when the GPU supports it) or CPU; no grad scaler (bf16 has fp32's range).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger("cadet_d2")

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_SHORT = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``dtype`` None = fp32 (no autocast)."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def use_grad_scaler(self) -> bool:
        """fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not."""
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        """"fp32", "fp16" or "bf16"."""
        return _SHORT[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this precision (a no-op context for fp32)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh grad scaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.use_grad_scaler else None


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BW/VL/DQ or newer). Without it,
    bf16 convolutions fall back to slow reference kernels (unknown: assume yes)."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:
        return True


def advise_cpu_precision(cfg) -> None:
    """Log the bf16 advice for a CPU run of ``cfg`` (:mod:`cadet_d2.engine.bf16_check`): a
    warning where bf16 autocast is configured and slower than fp32 on this CPU (measured once
    per machine and model, or no native bf16), a line where fp32 is configured and the cache says
    bf16 is clearly faster; nothing where bf16 is configured and faster. Main process only
    (the other processes of a multi-process run would measure at the same time)."""
    from detectron2.utils import comm

    from .bf16_check import bf16_advice, bf16_speed

    if not comm.is_main_process():
        return
    bf16 = bool(cfg.SOLVER.AMP.ENABLED) and cfg.CADET.SOLVER.AMP_DTYPE == "bfloat16"
    advice = bf16_advice(bf16_speed(cfg, measure=bf16), bf16)
    if advice:
        logger.log(*advice)


def resolve_precision(cfg, advise: bool = True) -> Precision:
    """The :class:`Precision` of a validated ``cfg`` (``SOLVER.AMP.ENABLED``,
    ``CADET.SOLVER.AMP_DTYPE``, ``MODEL.DEVICE``), checked against this machine: CUDA must be
    there for a CUDA device, bf16 on CUDA needs a GPU that supports it; on a CPU, with
    ``advise``, :func:`advise_cpu_precision` (benchmarks, which time both, pass False). Which
    dtype a device allows (fp16: CUDA only) is ``validate_cadet_config``'s rule."""
    device_type = torch.device(cfg.MODEL.DEVICE).type
    if device_type == "cpu" and advise:
        advise_cpu_precision(cfg)
    if not cfg.SOLVER.AMP.ENABLED:
        return Precision(device_type)
    dtype = AMP_DTYPES[cfg.CADET.SOLVER.AMP_DTYPE]
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("SOLVER.AMP.ENABLED with MODEL.DEVICE cuda, but CUDA is not available")
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ValueError("CADET.SOLVER.AMP_DTYPE bfloat16: this GPU does not support bf16; use float16")
    elif device_type != "cpu":
        raise ValueError(f"SOLVER.AMP.ENABLED is supported on cuda and cpu, not on {cfg.MODEL.DEVICE!r}")
    return Precision(device_type, dtype)
