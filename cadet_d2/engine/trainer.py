"""``CadetTrainer``: Detectron2's DefaultTrainer with the multimodal mapper and COCO evaluation."""
from __future__ import annotations

import logging
import os

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm

from ..data.mapper import MultiModalDatasetMapper
from ..data.stream import build_deterministic_train_loader
from ..evaluation import (CLEAN, box_metrics, build_evaluator, condition_table, evaluate_conditions,
                          format_table, write_metrics)
from ..modeling.fusion.cssa_variants import THRESHOLD_PARAM
from .reliability import ReliableTrainerMixin
from .scale import ScaleTrainerMixin

logger = logging.getLogger("cadet_d2")


class CadetTrainer(ScaleTrainerMixin, ReliableTrainerMixin, DefaultTrainer):
    """DefaultTrainer (hooks, checkpointer, AMP, DDP) for cadet_d2 models and data, with exact
    resume, atomic checkpoints and a NaN guard (:class:`ReliableTrainerMixin`), and bf16/fp16
    autocast, gradient accumulation and CPU DDP (:class:`ScaleTrainerMixin`)."""

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = MultiModalDatasetMapper(cfg, True)
        if cfg.CADET.DATA.DETERMINISTIC_STREAM:  # exact resume; see cadet_d2/data/stream.py
            return build_deterministic_train_loader(cfg, mapper)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=MultiModalDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: str | None = None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
        """SGD (Detectron2's settings) or AdamW (``CADET.SOLVER.OPTIMIZER``) over Detectron2's
        param groups; learned CSSA thresholds at ``BASE_LR x CADET.FUSION.CSSA.THRESHOLD_LR_MULT``."""
        lr = cfg.SOLVER.BASE_LR
        params = get_default_optimizer_params(
            model,
            base_lr=lr,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
            overrides={THRESHOLD_PARAM: {"lr": lr * cfg.CADET.FUSION.CSSA.THRESHOLD_LR_MULT}},
        )
        if cfg.CADET.SOLVER.OPTIMIZER.upper() == "SGD":
            optim, extra = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
        else:
            optim, extra = torch.optim.AdamW, {}
        return maybe_add_gradient_clipping(cfg, optim)(params, lr=lr, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **extra)

    @classmethod
    def test(cls, cfg, model, evaluators=None) -> dict:
        """Evaluate on every ``DATASETS.TEST`` set, then under each sensor-failure condition of
        ``CADET.TEST`` (if any); log the tables, write ``CADET.TEST.METRICS_FILE``."""
        results = super().test(cfg, model, evaluators)
        conditions = evaluate_conditions(cfg, model) if cfg.CADET.TEST.DROP_MODALITIES else {}
        if comm.is_main_process() and results:
            # DefaultTrainer returns {task: ...} instead of {dataset: {task: ...}} for one dataset.
            per_set = {cfg.DATASETS.TEST[0]: results} if len(cfg.DATASETS.TEST) == 1 else results
            metrics = box_metrics(per_set)
            logger.info("[cadet] COCO box metrics:\n" + format_table(metrics))
            extra = {}
            if conditions:
                rows = {CLEAN: metrics, **conditions}
                logger.info("[cadet] AP under sensor failure:\n" + condition_table(rows))
                extra["conditions"] = [{"name": k, "datasets": v} for k, v in rows.items()]  # ordered
            path = os.path.join(cfg.OUTPUT_DIR, cfg.CADET.TEST.METRICS_FILE)
            write_metrics(path, metrics, weights=cfg.MODEL.WEIGHTS, **extra)
            logger.info(f"[cadet] metrics written to {path}")
        return results
