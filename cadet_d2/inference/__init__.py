"""Predict and look: a trained model over ``.npy`` files, COCO-style results, pictures.

* :class:`BatchPredictor` runs a model on files of any size, in batches, and returns boxes in
  each file's own coordinates (:class:`Prediction`);
* :func:`write_coco_results` writes them as a COCO detection-results JSON;
* :func:`predict_files` is ``tools/predict.py``; :func:`draw_dataset` is ``tools/visualize_data.py``.
"""
from .ground_truth import draw_dataset
from .inputs import collect_inputs, output_names
from .predictor import BatchPredictor, Prediction, load_model
from .results import to_coco_results, write_coco_results
from .run import class_names, predict_files

__all__ = [
    "BatchPredictor", "Prediction", "class_names", "collect_inputs", "draw_dataset", "load_model",
    "output_names", "predict_files", "to_coco_results", "write_coco_results",
]
