"""``ReliableTrainerMixin``: exact resume, atomic checkpoints and a NaN guard for DefaultTrainer.

Used as ``class CadetTrainer(ReliableTrainerMixin, DefaultTrainer)``. On top of Detectron2's
``DefaultTrainer`` it

* swaps the checkpointer for :class:`~cadet_d2.engine.checkpoint.CadetCheckpointer` (atomic,
  finite-only saves; weights-only loading) and adds two checkpointables: ``rng`` (global RNG
  states of every rank) and ``data_stream`` (seed and load failures of the
  :class:`~cadet_d2.data.stream.DeterministicTrainLoader`);
* adds the optimizer (and AMP grad-scaler) state to the ``trainer`` entry of each checkpoint
  (Detectron2 0.6's DefaultTrainer saves only the iteration and the LR scheduler);
* starts the training stream at the resumed iteration;
* stops on a non-finite loss with the iteration and loss terms, and writes no checkpoint (nor
  runs the final evaluation) afterwards;
* checks before training that OUTPUT_DIR has room for checkpoints;
* runs evaluations without touching the global RNG states, so that evaluating during training
  does not change what an uninterrupted run does compared with a resumed one.
"""
from __future__ import annotations

import logging

from detectron2.engine import hooks
from detectron2.utils import comm

from ..data.stream import DeterministicTrainLoader
from .checkpoint import CadetCheckpointer, GatherResumeState, RNGState, preserved_rng_state
from .preflight import check_room_for_checkpoints

logger = logging.getLogger("cadet_d2")


class ReliableTrainerMixin:
    """Mixin for ``DefaultTrainer`` subclasses (put it first in the bases)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._install_checkpointer()
        if comm.is_main_process() and self.checkpointer.save_dir:
            check_room_for_checkpoints(self.checkpointer.save_dir, self.model)

    def _install_checkpointer(self) -> None:
        old = self.checkpointer
        ckpt = CadetCheckpointer(old.model, old.save_dir, save_to_disk=old.save_to_disk, **old.checkpointables)
        self.rng_state = RNGState()
        ckpt.add_checkpointable("rng", self.rng_state)
        gathered = [self.rng_state]
        loader = self._trainer.data_loader
        if isinstance(loader, DeterministicTrainLoader):
            ckpt.add_checkpointable("data_stream", loader)
            gathered.append(loader)
        else:
            logger.warning("[cadet] the train loader is not a DeterministicTrainLoader: a resumed run restarts "
                           "the data stream (no exact resume)")
        self.checkpointer = ckpt
        for h in self._hooks:
            if isinstance(h, (hooks.PeriodicCheckpointer, hooks.BestCheckpointer)):
                h.checkpointer = ckpt
        if comm.get_world_size() > 1:
            # Every rank gathers its RNG state/load failures where the main rank's checkpointer hook
            # saves: just before that hook (main) or the evaluation hook (others).
            gather = GatherResumeState(self.cfg.SOLVER.CHECKPOINT_PERIOD, *gathered)
            idx = next((i for i, h in enumerate(self._hooks)
                        if isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook, hooks.PeriodicWriter))),
                       len(self._hooks))
            self.register_hooks([gather])  # sets gather.trainer
            self._hooks.remove(gather)
            self._hooks.insert(idx, gather)

    # ---- checkpoint content ----------------------------------------------------------------
    def state_dict(self) -> dict:
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()  # optimizer (+ AMP grad scaler)
        return ret

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("[cadet] the checkpoint has no optimizer state (written by plain Detectron2?): the "
                           "optimizer starts afresh (not an exact resume)")

    def resume_or_load(self, resume: bool = True) -> None:
        """Detectron2's resume_or_load, then the training stream starts at the resumed iteration."""
        if resume and comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        super().resume_or_load(resume=resume)
        resumed = resume and self.checkpointer.has_checkpoint()
        if resumed and not self.rng_state.restored:
            logger.warning("[cadet] the checkpoint has no RNG state: the resumed run's randomness differs from "
                           "an uninterrupted run's (not an exact resume)")
        loader = self._trainer.data_loader
        if isinstance(loader, DeterministicTrainLoader):
            loader.set_start(self.start_iter)
            logger.info(f"[cadet] training stream: seed {loader.seed}, starting at iteration {self.start_iter}"
                        + (f", {len(loader.load_failures)} load failure(s) so far" if loader.load_failures else ""))

    # ---- NaN guard ---------------------------------------------------------------------------
    def run_step(self) -> None:
        try:
            super().run_step()
        except FloatingPointError as e:
            last = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else "none"
            self.checkpointer.block_saves(f"the loss became non-finite at iteration {self.iter}")
            raise FloatingPointError(
                f"[cadet] non-finite loss at iteration {self.iter}; training stopped and no checkpoint is written "
                f"after it (last good checkpoint: {last}). Detectron2 reports: {e} "
                "Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS or check the data (tools/check_data.py)."
            ) from e

    def after_train(self) -> None:
        if getattr(self.checkpointer, "blocked_reason", None):
            # Stopped on NaN/inf: run the hooks' after_train but not the final evaluation.
            self.storage.iter = self.iter
            for h in self._hooks:
                if not isinstance(h, hooks.EvalHook):
                    h.after_train()
            return
        super().after_train()

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        with preserved_rng_state():  # evaluation must not shift the training randomness
            return super().test(cfg, model, evaluators)
