"""TorchScript export of an :class:`ExportableDetector` by ``torch.jit.trace``."""
from __future__ import annotations

import torch

from .tracing import collect_warnings
from .wrapper import ExportableDetector, traceable


def export_torchscript(wrapper: ExportableDetector, image: torch.Tensor, path: str) -> list[str]:
    """Trace ``wrapper`` on ``image`` (1, C, H, W), save the module to ``path``; returns the warnings.

    Sizes read from tensors are recorded as graph operations, so the traced module accepts any
    H, W and returns any number of detections. ``torch.jit`` is deprecated in favour of
    torch.export (a FutureWarning), but torch.export cannot take Detectron2's data-dependent
    branches (see docs/export.md); the saved file loads with ``torch.jit.load`` without
    cadet_d2, Detectron2 or timm (it needs torchvision's ops: ``import torchvision``).
    """
    with collect_warnings() as found, traceable(wrapper.model), torch.no_grad():
        traced = torch.jit.trace(wrapper, (image,), check_trace=False)
    traced.save(path)
    return found
