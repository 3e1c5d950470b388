"""``ExportableDetector``: a cadet_d2 detector as a function of one image tensor, for tracing."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from detectron2.modeling import GeneralizedRCNN
from torch import nn


class ExportableDetector(nn.Module):
    """Flat tensors in, flat tensors out: what ``torch.jit.trace`` and ``torch.onnx.export`` need.

    ``forward(image)``: image (1, C, H, W) float32, 0-255, resized as the test mapper does ->
    ``boxes`` (N, 4) xyxy in input pixels, ``scores`` (N,), ``classes`` (N,) int64. It runs the
    whole detector: normalisation and padding to a multiple of 32, backbone, FPN, RPN (with its
    NMS), RoI heads and their score threshold, per-class NMS and top-k
    (``model.inference(..., do_postprocess=False)``; the boxes stay in input pixels). ``model``:
    a ``CadetRCNN`` or a ``LateFusionRCNN`` (:func:`detectors`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if model.training:
            raise ValueError("export a model in eval mode (model.eval())")
        detectors(model)  # a model that cannot be traced stops here, saying why
        self.model = model
        self.eval()  # exporters put the wrapper back into its own mode afterwards, recursively

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.dim() != 4:
            raise ValueError(f"expected one image (1, C, H, W), got {tuple(image.shape)}")
        # a reshape, not image[0]: in the traced graph a batch of more than one image fails
        # here instead of silently dropping all images but the first
        one = image.reshape(image.shape[-3:])
        inst = self.model.inference([{"image": one}], do_postprocess=False)[0]
        return inst.pred_boxes.tensor, inst.scores, inst.pred_classes


def _one_image_probs(predictor, predictions, proposals) -> tuple[torch.Tensor]:
    """Class probabilities (R, K + 1) of the RoIs of one image, as a 1-tuple."""
    scores, _ = predictions
    if getattr(predictor, "use_sigmoid_ce", False):
        return (scores.sigmoid(),)
    return (torch.softmax(scores, dim=-1),)


def _one_image_boxes(predictor, predictions, proposals) -> tuple[torch.Tensor]:
    """Decoded boxes (R, K * 4) of the RoIs of one image, as a 1-tuple."""
    _, deltas = predictions
    return (predictor.box2box_transform.apply_deltas(deltas, proposals[0].proposal_boxes.tensor),)


def detectors(model: torch.nn.Module) -> list[GeneralizedRCNN]:
    """The Faster R-CNNs inside ``model``: itself, or a late-fusion model's branches (its merge rule
    is traced with them: ``nms`` as torchvision's op, ``proben`` as one scripted loop)."""
    if isinstance(model, GeneralizedRCNN):
        return [model]
    branches = getattr(model, "branches", None)
    if branches is None:
        raise ValueError(f"cannot export {type(model).__name__}: neither a GeneralizedRCNN nor a late-fusion model")
    return list(branches.values())


@contextlib.contextmanager
def traceable(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``_traceable`` for every detector of ``model`` (:func:`detectors`)."""
    with contextlib.ExitStack() as stack:
        for d in detectors(model):
            stack.enter_context(_traceable(d))
        yield model


@contextlib.contextmanager
def _traceable(model: GeneralizedRCNN) -> Iterator[GeneralizedRCNN]:
    """Export-only patch: the box predictor skips its per-image ``split``.

    Detectron2's ``FastRCNNOutputLayers.predict_boxes/predict_probs`` split the RoI outputs by
    ``[len(p) for p in proposals]``; ``len`` is a Python int, so a trace would record the number
    of proposals of the example image as a constant (ONNX Runtime then fails on any image whose
    RPN keeps another number: "Cannot split using values in 'split' attribute"). With one image
    the split is the identity, so the patch returns the whole tensor instead. Restored on exit.
    """
    predictor = model.roi_heads.box_predictor
    saved = {k: predictor.__dict__.get(k) for k in ("predict_probs", "predict_boxes")}
    predictor.predict_probs = lambda pred, props: _one_image_probs(predictor, pred, props)
    predictor.predict_boxes = lambda pred, props: _one_image_boxes(predictor, pred, props)
    try:
        yield model
    finally:
        for k, v in saved.items():
            if v is None:
                predictor.__dict__.pop(k, None)
            else:
                setattr(predictor, k, v)
