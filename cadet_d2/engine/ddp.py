"""DistributedDataParallel on the CPU inside Detectron2's ``DefaultTrainer``.

``DefaultTrainer.__init__`` wraps the model with ``create_ddp_model(model, broadcast_buffers=False)``,
which passes ``device_ids=[local rank]``: right for one GPU per process, an error for a CPU model
("device_ids ... only work with ... GPU modules"). :func:`ddp_on_any_device` makes that call pass
``device_ids=None`` for a model whose parameters are not on a GPU, while the trainer is built.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from detectron2.engine import defaults


def create_ddp_model_any_device(model: torch.nn.Module, *, _create=None, **kwargs) -> torch.nn.Module:
    """Detectron2's ``create_ddp_model``, with ``device_ids=None`` when ``model`` is not on CUDA."""
    create = _create or defaults.create_ddp_model
    param = next(model.parameters(), None)
    if "device_ids" not in kwargs and param is not None and param.device.type != "cuda":
        kwargs["device_ids"] = None  # CPU DDP (gloo): no device ids
    return create(model, **kwargs)


@contextlib.contextmanager
def ddp_on_any_device() -> Iterator[None]:
    """While active, ``DefaultTrainer`` wraps CPU models with a CPU-ready DDP."""
    original = defaults.create_ddp_model

    def patched(model, **kwargs):
        return create_ddp_model_any_device(model, _create=original, **kwargs)

    defaults.create_ddp_model = patched
    try:
        yield
    finally:
        defaults.create_ddp_model = original
