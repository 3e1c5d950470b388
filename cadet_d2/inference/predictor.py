"""``BatchPredictor``: a trained CadetRCNN over images of any size (``.npy`` files or pairs of
image files), in batches."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..data.errors import DataError
from ..data.mapper import MultiModalDatasetMapper
from ..data.npy import read_image_size
from ..data.pairs import Pair
from .inputs import Input

logger = logging.getLogger("cadet_d2")


@dataclass
class Prediction:
    """Detections of one image, in the coordinates of the original file (``file_name``: the
    ``.npy`` file, or a pair's RGB file).

    ``boxes``: (N, 4) float32 XYXY pixels, inside [0, width] x [0, height]; ``scores``: (N,)
    float32, descending; ``classes``: (N,) int64 contiguous class indices (0-based).
    """

    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def load_model(cfg: CfgNode) -> torch.nn.Module:
    """``build_model(cfg)`` on ``cfg.MODEL.DEVICE`` with ``cfg.MODEL.WEIGHTS`` loaded (safely:
    ``torch.load(weights_only=True)``), in eval mode. A device this machine lacks stops first
    (:func:`~cadet_d2.engine.launch.check_device`); a weights file that does not fit the model
    exactly stops naming the keys (:func:`~cadet_d2.engine.weights.load_exact_weights`). Empty
    ``MODEL.WEIGHTS``: random weights, with a warning."""
    from ..engine.launch import check_device
    from ..engine.weights import load_exact_weights

    check_device(cfg.MODEL.DEVICE)
    model = build_model(cfg)
    weights = cfg.MODEL.WEIGHTS
    if weights:
        load_exact_weights(model, weights)
    else:
        logger.warning("[cadet] MODEL.WEIGHTS is empty: the model is untrained (random weights)")
    return model.eval()


def to_instances(det, input_hw: tuple[int, int], height: int, width: int) -> Instances:
    """Detections of an exported model (``det.boxes`` (N, 4) xyxy in input pixels, ``det.scores``
    (N,), ``det.classes`` (N,)) -> Instances in original (``height``, ``width``) pixels, as the
    model's own postprocessing does (rescale, clip, drop empty boxes: ``detector_postprocess``)."""
    inst = Instances(tuple(input_hw))
    inst.pred_boxes = Boxes(torch.as_tensor(det.boxes))
    inst.scores = torch.as_tensor(det.scores)
    inst.pred_classes = torch.as_tensor(det.classes)
    return detector_postprocess(inst, height, width)


def input_record(item: Input, modalities, file_channels: int) -> dict:
    """The dataset dict of one input (no annotations): ``file_name``, ``height``, ``width`` and,
    for a pair, ``pair`` {modality: file} of ``modalities``. A pair without one of them, or with a
    missing file, raises :class:`DataError` naming its pairs.csv line."""
    if not isinstance(item, Pair):
        height, width = read_image_size(item, file_channels)
        return {"file_name": item, "height": height, "width": width}
    return item.record(modalities)


class BatchPredictor:
    """Run a model built from ``cfg`` on inputs (``.npy`` paths or :class:`Pair` s),
    ``batch_size`` images at a time.

    Each input is read and resized like a test image (``MultiModalDatasetMapper(cfg,
    is_train=False)``: the configured channels, shorter side ``INPUT.MIN_SIZE_TEST``); the model
    maps its boxes back to the file's own size. Only images of the same size share a batch, so
    padding never changes a result: batch size 1 and N give the same detections. Detections
    scoring below ``score_thresh`` are dropped after inference (the model's own
    ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` and ``TEST.DETECTIONS_PER_IMAGE`` apply first).
    A bad file (truncated, wrong channels, a pair without a file of ``CADET.INPUT.MODALITIES``)
    raises :class:`~cadet_d2.data.DataError` naming it; with ``on_error`` "skip" (default:
    ``CADET.DATA.ON_ERROR``) it is left out instead, logged, and listed in :attr:`skipped`
    (index in the inputs, message) of the last call.

    ``runner``: instead of the PyTorch model, an exported model (``cadet_d2.export.load_runner``:
    one (1, C, H, W) float32 array -> boxes in input pixels, scores, classes), one image at a time
    (``batch_size`` is then 1); its boxes are mapped back like the model's (:func:`to_instances`).
    """

    def __init__(self, cfg: CfgNode, batch_size: int = 4, score_thresh: float = 0.0,
                 model: torch.nn.Module | None = None, on_error: str | None = None, runner=None):
        if runner is not None:
            batch_size = 1
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= score_thresh <= 1.0:
            raise ValueError(f"score threshold {score_thresh} must lie in [0, 1]")
        self.cfg = cfg
        self.batch_size = batch_size
        self.score_thresh = score_thresh
        self.runner = runner
        self.model = None if runner is not None else load_model(cfg) if model is None else model.eval()
        self.mapper = MultiModalDatasetMapper(cfg, is_train=False)
        self.channels = cfg.CADET.INPUT.FILE_CHANNELS
        self.modalities = list(cfg.CADET.INPUT.MODALITIES)
        self.on_error = cfg.CADET.DATA.ON_ERROR if on_error is None else on_error
        self.skipped: list[tuple[int, str]] = []

    def record(self, item: Input) -> dict:
        """The dataset dict of one input (:func:`input_record`)."""
        return input_record(item, self.modalities, self.channels)

    def checked(self, index: int, item, read):
        """``read(item)``; a :class:`DataError` propagates, or with ``on_error`` "skip" is logged,
        recorded in :attr:`skipped` under ``index`` and gives None."""
        try:
            return read(item)
        except DataError as e:
            if self.on_error != "skip":
                raise
            self.skipped.append((index, str(e)))
            logger.warning(f"[cadet] skipped (CADET.DATA.ON_ERROR skip): {e}")
            return None

    def batches(self, records: list[dict | None]) -> list[list[int]]:
        """Indices of ``records`` per batch (None: skipped): same-size images together, each size
        in first-seen order."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(records):
            if r is not None:
                groups.setdefault((r["height"], r["width"]), []).append(i)
        return [idx[k:k + self.batch_size] for idx in groups.values() for k in range(0, len(idx), self.batch_size)]

    def run_batch(self, inputs: list[dict]) -> list[Prediction]:
        """Detections of mapped inputs (:meth:`map`), in original image coordinates."""
        if self.runner is not None:
            outputs = [{"instances": to_instances(self.runner(x["image"][None].numpy()), x["image"].shape[-2:],
                                                  x["height"], x["width"])} for x in inputs]
        else:
            with torch.no_grad():
                outputs = self.model(inputs)
        preds = []
        for x, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            keep = inst.scores >= self.score_thresh
            preds.append(Prediction(
                file_name=x["file_name"], height=int(x["height"]), width=int(x["width"]),
                boxes=inst.pred_boxes.tensor[keep].numpy().astype(np.float32),
                scores=inst.scores[keep].numpy().astype(np.float32),
                classes=inst.pred_classes[keep].numpy().astype(np.int64),
            ))
        return preds

    def iter_batches(self, files: list[Input]) -> Iterator[list[tuple[int, dict, Prediction]]]:
        """Per batch: (index in ``files``, mapped input, prediction) of each of its images (a
        skipped file: in no batch, see :attr:`skipped`)."""
        self.skipped = []
        records = [self.checked(i, f, self.record) for i, f in enumerate(files)]
        for idx in self.batches(records):
            mapped = [(i, self.checked(i, records[i], self.mapper)) for i in idx]
            idx, inputs = [i for i, m in mapped if m is not None], [m for _, m in mapped if m is not None]
            if inputs:
                yield list(zip(idx, inputs, self.run_batch(inputs)))

    def __call__(self, files: list[Input]) -> list[Prediction | None]:
        """Predictions of ``files``, in the same order (None for a skipped file)."""
        out: list[Prediction | None] = [None] * len(files)
        for batch in self.iter_batches(files):
            for i, _, pred in batch:
                out[i] = pred
        return out  # type: ignore[return-value]
