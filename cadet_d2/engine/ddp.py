"""DistributedDataParallel for GPU and CPU models.

Detectron2's ``create_ddp_model`` passes ``device_ids=[local rank]`` unless told otherwise: right
for one GPU per process, an error for a CPU model ("device_ids ... only work with ... GPU
modules"). :func:`create_ddp_model_any_device` passes ``device_ids=None`` for a CPU model.
"""
from __future__ import annotations

import torch
from detectron2.engine import create_ddp_model


def create_ddp_model_any_device(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Detectron2's ``create_ddp_model`` (the model itself with one process), with
    ``device_ids=None`` when ``model`` is not on CUDA."""
    param = next(model.parameters(), None)
    if "device_ids" not in kwargs and param is not None and param.device.type != "cuda":
        kwargs["device_ids"] = None  # CPU DDP (gloo): no device ids
    return create_ddp_model(model, **kwargs)
