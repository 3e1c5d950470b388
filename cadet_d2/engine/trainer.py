"""``CadetTrainer``: the training engine, composed from Detectron2's public parts.

Read top to bottom, :meth:`CadetTrainer.__init__` builds, in this order (as Detectron2's
``tools/lazyconfig_train_net.py`` ``do_train`` does, nothing replaced afterwards):

1. the model (``build_model``), its optimizer (SGD or AdamW, :meth:`CadetTrainer.build_optimizer`)
   and the training stream (:class:`~cadet_d2.data.stream.DeterministicTrainLoader`, or
   Detectron2's loader with ``CADET.DATA.DETERMINISTIC_STREAM False``);
2. the DDP wrap with more than one process (``device_ids=None`` on the CPU: gloo);
3. the step, chosen once from the config: :class:`~cadet_d2.engine.step.AccumAMPTrainer` with the
   run's :class:`~cadet_d2.engine.precision.Precision` (fp32, fp16 with a grad scaler, bf16) and
   ``SOLVER.ACCUM_STEPS`` micro-batches per optimizer step;
4. the LR scheduler (Detectron2's, counting optimizer steps);
5. the checkpointer (:class:`~cadet_d2.engine.checkpoint.CadetCheckpointer`: atomic, finite-only
   saves) with its checkpointables: ``trainer`` (the iteration), ``optimizer``, ``scheduler``,
   ``grad_scaler`` (fp16), ``rng`` (every rank's global RNG states) and ``data_stream`` (seed and
   load failures of the deterministic stream);
6. the hooks, an explicit ordered list (:func:`build_hooks`), registered with ``register_hooks``.

:meth:`CadetTrainer.run_step` is the NaN guard: a non-finite loss blocks every later checkpoint
save and the final evaluation, and stops training with the iteration and the last good
checkpoint. :meth:`CadetTrainer.test` evaluates on ``DATASETS.TEST`` and under the sensor-failure
conditions of ``CADET.TEST``, without touching the global RNG states, and writes the metrics file.
"""
from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict
from typing import Any

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, HookBase, TrainerBase, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format, verify_results
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules

from ..data.mapper import MultiModalDatasetMapper
from ..data.stream import DeterministicTrainLoader, build_deterministic_train_loader
from ..data.workers import WorkerSafeLoader
from ..evaluation import (CLEAN, box_metrics, build_evaluator, condition_table, evaluate_conditions,
                          format_table, no_detections_as_zero, write_metrics)
from ..modeling.fusion.cssa_variants import THRESHOLD_PARAM
from ..utils.machine import machine_label
from .checkpoint import CadetCheckpointer, GatherResumeState, RNGState, preserved_rng_state
from .compat import legacy_trainer_state
from .ddp import create_ddp_model_any_device
from .freeze import KeepFrozen
from .precision import resolve_precision
from .preflight import check_room_for_checkpoints
from .signals import StopOnSignal
from .step import AccumAMPTrainer

logger = logging.getLogger("cadet_d2")


class CadetTrainer(TrainerBase):
    """Trains a cadet_d2 model from a config: ``CadetTrainer(cfg)``, then
    ``resume_or_load(resume=...)`` and ``train()``.

    Attributes: ``cfg``, ``model`` (DDP-wrapped with several processes), ``optimizer``,
    ``data_loader``, ``step`` (the :class:`AccumAMPTrainer` that runs each iteration),
    ``scheduler``, ``checkpointer``, ``rng_state``, ``start_iter``, ``max_iter``,
    ``stopped_reason`` (set by the NaN guard) and ``last_eval_results``. ``extra_hooks`` run
    after the trainer's own (:func:`build_hooks`).
    """

    def __init__(self, cfg, extra_hooks: list[HookBase] | tuple = ()):
        super().__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg
        precision = resolve_precision(cfg)  # fails early on an impossible precision
        accum = int(cfg.SOLVER.ACCUM_STEPS)

        # 1-2. model, optimizer, training stream; DDP
        model = self.build_model(cfg)
        self.optimizer = self.build_optimizer(cfg, model)
        self.data_loader = self.build_train_loader(cfg)
        self.model = create_ddp_model_any_device(model, broadcast_buffers=False)

        # 3. the step of every iteration
        self.step = AccumAMPTrainer(self.model, self.data_loader, self.optimizer, accum_steps=accum,
                                    precision=precision)

        # 4. LR schedule, over optimizer steps
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)

        # 5. checkpointer and what each checkpoint holds (beside the model)
        self.rng_state = RNGState()
        self.restored: dict[str, bool] = {}  # checkpointable -> restored by the last resume
        checkpointables: dict[str, Any] = {
            "trainer": weakref.proxy(self),
            "optimizer": _Tracked(self.optimizer, "optimizer", self.restored),
            "scheduler": _Tracked(self.scheduler, "scheduler", self.restored),
        }
        if self.step.grad_scaler is not None:
            checkpointables["grad_scaler"] = _Tracked(self.step.grad_scaler, "grad_scaler", self.restored)
        checkpointables["rng"] = self.rng_state
        self.resume_states: list[Any] = [self.rng_state]  # gathered from every rank before a save
        if isinstance(self.data_loader, DeterministicTrainLoader):
            checkpointables["data_stream"] = self.data_loader
            self.resume_states.append(self.data_loader)
        else:
            logger.warning("[cadet] the train loader is not a DeterministicTrainLoader (CADET.DATA.DETERMINISTIC_STREAM"
                           " False): a resumed run restarts the data stream (no exact resume)")
        self.checkpointer = CadetCheckpointer(model, cfg.OUTPUT_DIR, keep_last=cfg.CADET.CHECKPOINT.KEEP_LAST,
                                              **checkpointables)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            check_room_for_checkpoints(cfg, self.checkpointer, self.optimizer)

        self.start_iter, self.max_iter = 0, cfg.SOLVER.MAX_ITER
        self.stopped_reason: str | None = None
        self.last_eval_results: dict | None = None

        # 6. hooks, in order
        self.register_hooks(build_hooks(cfg, self) + list(extra_hooks))

        ims, world = cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size()
        logger.info(f"[cadet] precision {precision.name}"
                    f"{' with a grad scaler' if precision.use_grad_scaler else ''}; {accum} micro-batch(es) of "
                    f"{ims} image(s) ({ims // world} per process x {world}) per optimizer step: effective batch "
                    f"{ims * accum} images")

    # ---- builders (classmethods, so that tools and tests can build the parts alone) -------------
    @classmethod
    def build_model(cls, cfg) -> torch.nn.Module:
        model = build_model(cfg)
        logging.getLogger("detectron2").info(f"Model:\n{model}")
        return model

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
    def build_lr_scheduler(cls, cfg, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = MultiModalDatasetMapper(cfg, True)
        if cfg.CADET.DATA.DETERMINISTIC_STREAM:  # exact resume; see cadet_d2/data/stream.py
            return build_deterministic_train_loader(cfg, mapper)
        return WorkerSafeLoader(build_detection_train_loader(cfg, mapper=mapper), cfg.CADET.CHECKPOINT.STOP_SIGNALS)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        mapper = MultiModalDatasetMapper(cfg, False)
        return WorkerSafeLoader(build_detection_test_loader(cfg, dataset_name, mapper=mapper),
                                cfg.CADET.CHECKPOINT.STOP_SIGNALS)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: str | None = None):
        return build_evaluator(cfg, dataset_name, output_folder)

    # ---- resume ---------------------------------------------------------------------------------
    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: restore everything and continue after its
        iteration; else load ``MODEL.WEIGHTS`` (model only). Then the training stream starts at
        ``start_iter``."""
        if resume and comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        self.restored.clear()
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
            if self.start_iter >= self.max_iter:
                logger.warning(f"[cadet] the checkpoint is after {self.start_iter} iterations, SOLVER.MAX_ITER is "
                               f"{self.max_iter}: nothing left to train (raise SOLVER.MAX_ITER to train on); the "
                               "checkpoint is evaluated as it is")
            if not self.restored.get("optimizer"):
                logger.warning("[cadet] the checkpoint has no optimizer state (written by plain Detectron2?): the "
                               "optimizer starts afresh (not an exact resume)")
            if not self.rng_state.restored:
                logger.warning("[cadet] the checkpoint has no RNG state: the resumed run's randomness differs from "
                               "an uninterrupted run's (not an exact resume)")
        if isinstance(self.data_loader, DeterministicTrainLoader):
            self.data_loader.set_start(self.start_iter)
            failures = self.data_loader.load_failures
            logger.info(f"[cadet] training stream: seed {self.data_loader.seed}, starting at iteration "
                        f"{self.start_iter}" + (f", {len(failures)} load failure(s) so far" if failures else ""))

    def state_dict(self) -> dict:
        """The ``trainer`` entry of a checkpoint: the iteration (optimizer, scheduler and grad
        scaler are entries of their own)."""
        return {"iteration": self.iter}

    def load_state_dict(self, state_dict: dict) -> None:
        self.iter = int(state_dict["iteration"])
        # Older checkpoints keep optimizer/scheduler/scaler inside this entry; newer entries of their
        # own, loaded after this one, take precedence.
        for key, state in legacy_trainer_state(state_dict).items():
            if key in self.checkpointer.checkpointables:
                self.checkpointer.checkpointables[key].load_state_dict(state)

    # ---- training -------------------------------------------------------------------------------
    def train(self):
        """Train from ``start_iter`` to ``max_iter``; returns the last evaluation's results when
        ``TEST.EXPECTED_RESULTS`` asks to verify them (Detectron2's convention)."""
        super().train(self.start_iter, self.max_iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            if self.last_eval_results is None:
                raise RuntimeError("TEST.EXPECTED_RESULTS is set but no evaluation ran during training")
            verify_results(self.cfg, self.last_eval_results)
            return self.last_eval_results
        return None

    def run_step(self) -> None:
        """One iteration (:class:`AccumAMPTrainer`), guarded against a non-finite loss."""
        self.step.iter = self.iter
        try:
            self.step.run_step()
        except FloatingPointError as e:
            last = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else "none"
            self.stopped_reason = f"the loss became non-finite at iteration {self.iter}"
            self.checkpointer.block_saves(self.stopped_reason)
            raise FloatingPointError(
                f"[cadet] non-finite loss at iteration {self.iter}; training stopped and no checkpoint is written "
                f"after it (last good checkpoint: {last}). Detectron2 reports: {e} "
                "Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS or check the data (tools/check_data.py)."
            ) from e

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Evaluate the model being trained (:meth:`test`); kept as ``last_eval_results``. The
        metrics file records the iterations done and the weights' file: ``model_final.pth`` after
        the last iteration, else the name of this iteration's periodic checkpoint (written when
        ``SOLVER.CHECKPOINT_PERIOD`` falls on it)."""
        # after_train runs with iter = max_iter, or past it when resumed from a checkpoint at or past it
        done = max(min(self.iter + 1, self.max_iter), self.start_iter)
        name = "model_final.pth" if done == self.max_iter else f"model_{self.iter:07d}.pth"  # PeriodicCheckpointer's
        weights = os.path.join(self.cfg.OUTPUT_DIR, name)
        self.last_eval_results = self.test(self.cfg, self.model, weights=weights, iteration=done)
        return self.last_eval_results

    @classmethod
    def test(cls, cfg, model, evaluators=None, *, weights: str | None = None, iteration: int | None = None) -> dict:
        """COCO evaluation on every ``DATASETS.TEST`` set, then under each sensor-failure condition
        of ``CADET.TEST`` (if any); logs the tables and writes ``CADET.TEST.METRICS_FILE`` with
        ``weights`` (the file evaluated; default ``MODEL.WEIGHTS``), ``trained_iterations`` =
        ``iteration`` (the training iterations done to get the weights; None when unknown) and the
        machine. The global RNG states are as before (evaluating must not shift the training
        randomness).
        Returns ``{task: ...}`` for one test set, else ``{dataset: {task: ...}}``."""
        with preserved_rng_state():
            per_set: dict = OrderedDict()
            for idx, name in enumerate(cfg.DATASETS.TEST):
                evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
                per_set[name] = inference_on_dataset(model, cls.build_test_loader(cfg, name), evaluator)
                if comm.is_main_process():
                    logger.info(f"Evaluation results for {name} in csv format:")
                    print_csv_format(per_set[name])
            conditions = evaluate_conditions(cfg, model) if cfg.CADET.TEST.DROP_MODALITIES else {}
        if comm.is_main_process() and per_set:
            metrics = no_detections_as_zero(box_metrics(per_set))  # no detection at all: AP 0, warned
            for name, r in per_set.items():  # also in what is returned: EvalHook logs it (metrics.json)
                if "bbox" in r:
                    r["bbox"] = {k: metrics[name].get(k, v) for k, v in r["bbox"].items()}
            logger.info("[cadet] COCO box metrics:\n" + format_table(metrics))
            extra = {}
            if conditions:
                rows = {CLEAN: metrics, **conditions}
                logger.info("[cadet] AP under sensor failure:\n" + condition_table(rows))
                extra["conditions"] = [{"name": k, "datasets": v} for k, v in rows.items()]  # ordered
            path = os.path.join(cfg.OUTPUT_DIR, cfg.CADET.TEST.METRICS_FILE)
            weights = cfg.MODEL.WEIGHTS if weights is None else weights
            write_metrics(path, metrics, weights=weights, trained_iterations=iteration, machine=machine_label(),
                          **extra)
            logger.info(f"[cadet] metrics of {weights or 'MODEL.WEIGHTS (empty)'} written to {path}")
        return next(iter(per_set.values())) if len(per_set) == 1 else per_set


def build_hooks(cfg, trainer: CadetTrainer) -> list[HookBase]:
    """The hooks of a training run, in the order they run at each step."""
    main, several = comm.is_main_process(), comm.get_world_size() > 1
    bn_cfg = cfg.clone()
    bn_cfg.defrost()
    bn_cfg.DATALOADER.NUM_WORKERS = 0  # PreciseBN's own loader: no worker processes
    return [h for h in [
        hooks.IterationTimer(),
        hooks.LRScheduler(trainer.optimizer, trainer.scheduler),
        # CADET.INIT.FREEZE_ITERS: set the RGB detector's copied tensors back after each step, before
        # any checkpoint or evaluation of that iteration
        KeepFrozen.from_config(cfg, trainer.model),
        hooks.PreciseBN(cfg.TEST.EVAL_PERIOD, trainer.model, trainer.build_train_loader(bn_cfg),
                        cfg.TEST.PRECISE_BN.NUM_ITER)
        if cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(trainer.model) else None,
        # Several processes: every rank hands its RNG state and load failures to the main rank at the
        # iterations at which it saves (PeriodicCheckpointer runs on the main rank only).
        GatherResumeState(cfg.SOLVER.CHECKPOINT_PERIOD, *trainer.resume_states) if several else None,
        StopOnSignal.from_config(cfg),  # a stop signal: checkpoint at the end of this iteration, exit 75
        hooks.PeriodicCheckpointer(trainer.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD) if main else None,
        EvalHook(cfg.TEST.EVAL_PERIOD, trainer.evaluate),
        hooks.PeriodicWriter(default_writers(cfg.OUTPUT_DIR, trainer.max_iter), period=20) if main else None,
    ] if h is not None]


class EvalHook(hooks.EvalHook):
    """Detectron2's periodic and final evaluation, but no final evaluation once the NaN guard has
    stopped training (``trainer.stopped_reason``)."""

    def after_train(self) -> None:
        if self.trainer.stopped_reason:
            logger.warning(f"[cadet] final evaluation skipped: {self.trainer.stopped_reason}")
            return
        super().after_train()


class _Tracked:
    """A checkpointable (optimizer, scheduler, grad scaler) that records in ``restored[name]``
    whether a checkpoint restored it."""

    def __init__(self, obj: Any, name: str, restored: dict[str, bool]):
        self.obj, self.name, self.restored = obj, name, restored

    def state_dict(self) -> dict:
        return self.obj.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.obj.load_state_dict(state)
        self.restored[self.name] = True
