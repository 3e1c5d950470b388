"""``ExportableDetector``: a cadet_d2 detector as a function of one image tensor, for tracing."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
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


class OneImageBoxPredictor(nn.Module):
    """A box predictor (Detectron2's ``FastRCNNOutputLayers``) for one image, without its
    per-image ``split``.

    ``predict_boxes``/``predict_probs`` split the RoI outputs by ``[len(p) for p in proposals]``;
    ``len`` is a Python int, so a trace would record the number of proposals of the example image
    as a constant (ONNX Runtime then fails on any image whose RPN keeps another number: "Cannot
    split using values in 'split' attribute"). With one image the split is the identity:
    ``inference`` here decodes the whole tensors and calls Detectron2's ``fast_rcnn_inference``
    with the predictor's own thresholds. ``forward`` is the predictor's.
    """

    def __init__(self, predictor: nn.Module):
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor):
        """(R, D) RoI features -> the predictor's (scores (R, K + 1), deltas (R, K * 4))."""
        return self.predictor(x)

    def inference(self, predictions, proposals):
        """As ``FastRCNNOutputLayers.inference`` for ``proposals`` of one image."""
        p = self.predictor
        scores, deltas = predictions
        probs = scores.sigmoid() if getattr(p, "use_sigmoid_ce", False) else torch.softmax(scores, dim=-1)
        boxes = p.box2box_transform.apply_deltas(deltas, proposals[0].proposal_boxes.tensor)  # (R, K * 4)
        return fast_rcnn_inference((boxes,), (probs,), [x.image_size for x in proposals], p.test_score_thresh,
                                   p.test_nms_thresh, p.test_topk_per_image)


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
    """``model.roi_heads.box_predictor`` wrapped in :class:`OneImageBoxPredictor` (the same
    parameters) while tracing; the predictor is put back on exit."""
    predictor = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = OneImageBoxPredictor(predictor)
    try:
        yield model
    finally:
        model.roi_heads.box_predictor = predictor
