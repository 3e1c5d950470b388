"""ONNX export of an :class:`ExportableDetector` with PyTorch's TorchScript-based exporter."""
from __future__ import annotations

import torch

from .contract import INPUT_NAME, OUTPUT_NAMES
from .tracing import collect_warnings
from .wrapper import ExportableDetector, traceable

DEFAULT_OPSET = 17  # RoiAlign with half-pixel coordinates (ROIAlignV2) needs opset >= 16


def export_onnx(wrapper: ExportableDetector, image: torch.Tensor, path: str, opset: int = DEFAULT_OPSET,
                dynamic: bool = True) -> list[str]:
    """Trace ``wrapper`` on ``image`` (1, C, H, W) and write an ONNX file; returns the warnings.

    Uses ``torch.onnx.export(dynamo=False)``: the exporter based on ``torch.jit.trace``, which
    knows torchvision's ``nms`` / ``roi_align`` symbolics and turns traced shapes into graph
    operations, so H, W (``dynamic``) and the number of detections N stay dynamic. The torch.export
    based exporter (``dynamo=True``, the default since torch 2.9) stops at Detectron2's
    data-dependent Python branches (e.g. ``if not valid_mask.all()`` in the RPN).
    """
    if opset < 16:
        raise ValueError(f"opset {opset}: the RoIAlign of the box head (half-pixel, ROIAlignV2) needs opset >= 16")
    axes = {INPUT_NAME: {2: "height", 3: "width"}} if dynamic else {}
    axes.update({name: {0: "detections"} for name in OUTPUT_NAMES})
    with collect_warnings() as found, traceable(wrapper.model), torch.no_grad():
        torch.onnx.export(
            wrapper, (image,), path, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), dynamic_axes=axes, do_constant_folding=True,
        )
    import onnx

    onnx.checker.check_model(path)
    return found
