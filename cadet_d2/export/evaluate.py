"""COCO box AP of an exported model (or the PyTorch model) on a registered test set."""
from __future__ import annotations

import itertools
import logging
from typing import Callable, Iterator

import numpy as np
import torch
from detectron2.data import DatasetCatalog

from ..inference.predictor import to_instances
from .runtime import Detections

logger = logging.getLogger("cadet_d2")
# the AP (points) an export may lose or gain against the PyTorch model: int8 quantizes by design
AP_TOLERANCE = {"fp32": 0.5, "int8": 1.0}


def model_inputs(cfg, dataset_name: str, limit: int = 0) -> Iterator[tuple[dict, np.ndarray]]:
    """(dataset dict, model input (1, C, H, W) float32) for the images of a registered data
    set, through the test mapper (the contract's preprocessing); the first ``limit`` (0: all)."""
    from ..data import MultiModalDatasetMapper

    mapper = MultiModalDatasetMapper(cfg, is_train=False)
    dicts = DatasetCatalog.get(dataset_name)
    for d in itertools.islice(dicts, limit or None):
        yield d, mapper(d)["image"][None].numpy()


def evaluate_runner(runner: Callable[[np.ndarray], Detections], cfg, dataset_name: str,
                    output_dir: str | None = None, limit: int = 0) -> dict[str, float]:
    """COCO box metrics (AP, AP50, ...) of ``runner`` on ``dataset_name`` (registered, e.g. by
    ``cadet_d2.data.register_from_config(cfg)``), with the project's evaluator. With ``limit``,
    only the first ``limit`` images are scored (their ground truth only); a runner that detects
    nothing scores AP 0, as in training's evaluation."""
    from ..evaluation.coco import build_coco_evaluator, no_detections_as_zero

    evaluator = build_coco_evaluator(cfg, dataset_name, output_dir)
    evaluator.reset()
    image_ids = []
    for d, x in model_inputs(cfg, dataset_name, limit):
        out = to_instances(runner(x), x.shape[-2:], d["height"], d["width"])
        evaluator.process([d], [{"instances": out}])
        image_ids.append(d["image_id"])
    logger.info(f"[cadet] {dataset_name}: {len(image_ids)} images")
    metrics = dict(evaluator.evaluate(img_ids=image_ids).get("bbox", {}))
    return no_detections_as_zero({dataset_name: metrics})[dataset_name]


def evaluate_export(cfg, model: torch.nn.Module, export_dir: str, datasets: list[str], limit: int = 0,
                    threads: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """{dataset: {runtime: metrics}} for the PyTorch model and every file of ``export_dir``
    (``onnx``, ``onnx_int8``, ``torchscript``, ``openvino``, ...), each through the same pre- and
    postprocessing."""
    import os

    from .contract import read_meta
    from .runtime import TorchRunner, load_runner

    runners = {"pytorch": TorchRunner(model)}
    for kind in read_meta(export_dir).get("files", {}):
        runners[kind] = load_runner(export_dir, kind, threads)
    out: dict = {}
    for ds in datasets:
        out[ds] = {name: evaluate_runner(r, cfg, ds, os.path.join(export_dir, "eval", name, ds), limit)
                   for name, r in runners.items()}
    return out


def ap_parity(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """{runtime: {dataset: {"delta", "tolerance", "within"}}}: each export's AP minus PyTorch's
    (``results`` of :func:`evaluate_export`), against :data:`AP_TOLERANCE` (int8 kinds: 1.0 AP,
    the others, bf16 included: 0.5)."""
    out: dict = {}
    for ds, by_runtime in results.items():
        base = by_runtime["pytorch"]["AP"]
        for name, m in by_runtime.items():
            if name == "pytorch":
                continue
            tol = AP_TOLERANCE["int8" if name.endswith("int8") else "fp32"]
            delta = float(m["AP"] - base)
            out.setdefault(name, {})[ds] = {"delta": round(delta, 4), "tolerance": tol, "within": abs(delta) <= tol}
    return out


def record_evaluation(export_dir: str, results: dict[str, dict[str, dict[str, float]]]) -> dict:
    """Write ``results`` (:func:`evaluate_export`) and their :func:`ap_parity` into the folder's
    ``export_meta.json`` ("evaluation", "ap_parity"); returns the meta."""
    from .contract import read_meta, write_meta

    meta = dict(read_meta(export_dir), evaluation=results, ap_parity=ap_parity(results))
    write_meta(export_dir, meta)
    return meta


def format_ap_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: one row per (dataset, runtime), AP AP50 AP75 and AP minus PyTorch's."""
    rows = ["| dataset | runtime | AP | AP50 | AP75 | ΔAP vs PyTorch |", "|---|---|---:|---:|---:|---:|"]
    for ds, by_runtime in results.items():
        base = by_runtime.get("pytorch", {}).get("AP", float("nan"))
        for name, m in by_runtime.items():
            delta = "ref" if name == "pytorch" else f"{m.get('AP', float('nan')) - base:+.2f}"
            rows.append(f"| {ds} | {name} | {m.get('AP', float('nan')):.2f} | {m.get('AP50', float('nan')):.2f} | "
                        f"{m.get('AP75', float('nan')):.2f} | {delta} |")
    return "\n".join(rows)
