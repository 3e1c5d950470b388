"""DistributedDataParallel for GPU and CPU models.

Detectron2's ``create_ddp_model`` passes ``device_ids=[comm.get_local_rank()]`` unless told
otherwise: an error for a CPU model ("device_ids ... only work with ... GPU modules"), and an
assertion under cadet_d2's launch with Detectron2 v0.6 (no local process group there).
:func:`create_ddp_model_any_device` always passes them: the model's own GPU, or None on the CPU.
"""
from __future__ import annotations

import torch
from detectron2.engine import create_ddp_model


def create_ddp_model_any_device(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Detectron2's ``create_ddp_model`` (the model itself with one process), with
    ``device_ids=[the GPU model's device]``, or None when ``model`` is not on CUDA."""
    param = next(model.parameters(), None)
    if "device_ids" not in kwargs and param is not None:
        if param.device.type == "cuda":
            index = param.device.index
            kwargs["device_ids"] = [torch.cuda.current_device() if index is None else index]
        else:
            kwargs["device_ids"] = None  # CPU DDP (gloo): no device ids
    return create_ddp_model(model, **kwargs)
