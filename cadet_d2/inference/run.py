"""A prediction run: files -> ``predictions.json`` (COCO-style) and, optionally, pictures."""
from __future__ import annotations

import logging
import os
import time
from collections import Counter

from detectron2.config import CfgNode

from ..layout import modality_slices
from ..data.datasets import class_names
from ..data.mapper import MultiModalDatasetMapper
from .visualize import fusion_panels, save_detections
from .inputs import collect_inputs, output_names
from .predictor import BatchPredictor, Prediction
from .results import write_coco_results

logger = logging.getLogger("cadet_d2")
PREDICTIONS_FILE = "predictions.json"
VIS_DIR = "vis"


def save_prediction_picture(path: str, cfg: CfgNode, pred: Prediction, names: list[str], model_input: dict,
                            mapper: MultiModalDatasetMapper, model=None) -> None:
    """PNG of one prediction on its original image (read again from the files of its mapped
    ``model_input`` by ``mapper``); with ``model``, the fusion heat maps too."""
    image = mapper.load_original(model_input)
    extra = fusion_panels(model, model_input["image"], (pred.height, pred.width)) if model is not None else []
    save_detections(path, image, modality_slices(cfg), pred.boxes, pred.classes, pred.scores, names, extra)


def predict_files(cfg: CfgNode, inputs: list[str], output_dir: str, batch_size: int = 4,
                  score_thresh: float = 0.0, vis: bool = False, vis_fusion: bool = False,
                  recursive: bool = False, progress: bool = True, runner=None) -> dict:
    """Predict every image of ``inputs`` (``.npy`` files, folders, pairs.csv indexes: see
    ``collect_inputs``); write
    ``output_dir/predictions.json`` and, with ``vis`` / ``vis_fusion``, ``output_dir/vis/<name>.png``.

    ``runner``: an exported model instead of the PyTorch one (:class:`BatchPredictor`; no fusion
    maps then). A bad file stops the run naming it (:class:`~cadet_d2.data.DataError`), or with
    ``CADET.DATA.ON_ERROR skip`` is left out and counted.

    Returns the summary that is also logged: images, detections, per-class counts, seconds,
    ``skipped`` (``image_id`` and message of each file left out).
    """
    from tqdm import tqdm

    files = collect_inputs(inputs, recursive)
    if vis_fusion and runner is not None:
        raise ValueError("--vis-fusion draws the PyTorch model's fusion maps: use it with --runtime pytorch")
    predictor = BatchPredictor(cfg, batch_size, score_thresh, runner=runner)
    names = class_names(cfg)
    pictures = output_names(files) if vis or vis_fusion else []
    bottom_up = getattr(getattr(predictor.model, "backbone", None), "bottom_up", None)
    fusion_model = predictor.model if vis_fusion and getattr(bottom_up, "fusions", None) else None
    if vis_fusion and fusion_model is None:
        logger.warning("[cadet] --vis-fusion: the model has no fusion modules (early fusion, one stream or late "
                       "fusion); pictures show the modalities only")
    preds: list[Prediction | None] = [None] * len(files)
    start = time.perf_counter()
    with tqdm(total=len(files), unit="img", disable=not progress, desc="predict") as bar:
        for batch in predictor.iter_batches(files):
            for i, mapped, pred in batch:
                preds[i] = pred
                if pictures:
                    path = os.path.join(output_dir, VIS_DIR, pictures[i] + ".png")
                    save_prediction_picture(path, cfg, pred, names, mapped, predictor.mapper, fusion_model)
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    skipped = [{"image_id": i, "error": e} for i, e in predictor.skipped]
    results = write_coco_results(os.path.join(output_dir, PREDICTIONS_FILE), preds, names)
    per_class = Counter(names[r["category_id"] - 1] for r in results)
    summary = {"images": len(files), "detections": len(results), "per_class": dict(sorted(per_class.items())),
               "score_thresh": score_thresh, "seconds": round(seconds, 3),
               "predictions": os.path.join(output_dir, PREDICTIONS_FILE),
               "pictures": len(pictures) - len(skipped) if pictures else 0, "skipped": skipped}
    logger.info(f"[cadet] {summary['images']} images, {summary['detections']} detections with score >= "
                f"{score_thresh} ({summary['per_class']}), {seconds:.1f} s ({len(files) / max(seconds, 1e-9):.2f} img/s "
                f"incl. pictures); wrote {summary['predictions']}"
                + (f" and {summary['pictures']} pictures in {os.path.join(output_dir, VIS_DIR)}" if pictures else ""))
    if skipped:
        logger.warning(f"[cadet] {len(skipped)} of {len(files)} images skipped (CADET.DATA.ON_ERROR skip), no "
                       "detections for them in predictions.json: " + "; ".join(s["error"] for s in skipped))
    return summary
