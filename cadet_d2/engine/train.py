"""The body of ``tools/train_net.py`` (also ``python -m cadet_d2.engine.train``): train, resume, or
evaluate a checkpoint."""
from __future__ import annotations

import argparse
from typing import Callable, Sequence

from detectron2.engine import HookBase, default_argument_parser

from ..data.stream import check_batch_split
from .checkpoint import CadetCheckpointer
from .launch import check_device, launch, planned_world_size
from .setup import load_config, setup
from .trainer import CadetTrainer
from .weights import ExactCheckpointer


def main(args: argparse.Namespace, extra_hooks: Sequence[HookBase] = ()):
    """One process of a run: ``--eval-only`` evaluates ``MODEL.WEIGHTS`` (or, with ``--resume``,
    the last checkpoint); else trains (``extra_hooks`` run after the trainer's own)."""
    cfg = setup(args)
    if args.eval_only:
        model = CadetTrainer.build_model(cfg)
        checkpointer = ExactCheckpointer(model, save_dir=cfg.OUTPUT_DIR)  # no partly random model is scored
        check_eval_weights(cfg, checkpointer, args.resume)
        extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        it = extra.get("iteration")  # a training checkpoint's last iteration (0-based)
        return CadetTrainer.test(cfg, model, weights=checkpointer.loaded_file,
                                 iteration=it + 1 if isinstance(it, int) else None)
    trainer = CadetTrainer(cfg, extra_hooks=list(extra_hooks))
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def check_eval_weights(cfg, checkpointer: CadetCheckpointer, resume: bool) -> None:
    """``--eval-only`` evaluates trained weights: ``MODEL.WEIGHTS``, the last checkpoint of
    ``OUTPUT_DIR`` (``--resume``) or, for late fusion, ``CADET.LATE.WEIGHTS``. With none of them
    it would score a randomly initialised model (and write its metrics file): ValueError."""
    if cfg.MODEL.WEIGHTS or (resume and checkpointer.has_checkpoint()) or any(cfg.CADET.LATE.WEIGHTS):
        return
    where = f"; --resume found no checkpoint in {cfg.OUTPUT_DIR}" if resume else ""
    raise ValueError(f"--eval-only has no weights to evaluate (MODEL.WEIGHTS is empty{where}): add "
                     "MODEL.WEIGHTS path/to/model_final.pth, or --resume with the run's OUTPUT_DIR")


def cli(argv: list[str] | None = None, main_func: Callable[[argparse.Namespace], object] = main) -> None:
    """Parse ``tools/train_net.py``'s arguments and run ``main_func(args)`` in every process."""
    parser = default_argument_parser()
    args = parser.parse_args(argv)
    if not args.config_file:  # Detectron2's defaults are not a cadet_d2 model (3-channel PIXEL_MEAN, ResNet)
        parser.error("--config-file is required, e.g. --config-file configs/demo.yaml")
    # --num-gpus N: N processes (NCCL on GPUs; gloo with MODEL.DEVICE cpu); torchrun: see docs/scaling.md
    cfg = load_config(args.config_file, args.opts)  # a bad config stops here, before any process is spawned
    device = cfg.MODEL.DEVICE
    check_device(device, args.num_gpus)
    if not args.eval_only:
        check_batch_split(cfg.SOLVER.IMS_PER_BATCH, planned_world_size(args.num_gpus, args.num_machines))
    launch(main_func, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), device=device, stop_signals=cfg.CADET.CHECKPOINT.STOP_SIGNALS)


if __name__ == "__main__":  # python -m cadet_d2.engine.train: the study runner's entry point
    cli()
