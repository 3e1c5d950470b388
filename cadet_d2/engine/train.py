"""The body of ``tools/train_net.py`` (also ``python -m cadet_d2.engine.train``): train, resume, or
evaluate a checkpoint."""
from __future__ import annotations

import argparse
from typing import Callable, Sequence

from detectron2.engine import HookBase, default_argument_parser

from .checkpoint import CadetCheckpointer
from .launch import launch
from .setup import load_config, setup
from .trainer import CadetTrainer


def main(args: argparse.Namespace, extra_hooks: Sequence[HookBase] = ()):
    """One process of a run: ``--eval-only`` evaluates ``MODEL.WEIGHTS`` (or, with ``--resume``,
    the last checkpoint); else trains (``extra_hooks`` run after the trainer's own)."""
    cfg = setup(args)
    if args.eval_only:
        model = CadetTrainer.build_model(cfg)
        CadetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return CadetTrainer.test(cfg, model)
    trainer = CadetTrainer(cfg, extra_hooks=list(extra_hooks))
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: list[str] | None = None, main_func: Callable[[argparse.Namespace], object] = main) -> None:
    """Parse ``tools/train_net.py``'s arguments and run ``main_func(args)`` in every process."""
    args = default_argument_parser().parse_args(argv)
    # --num-gpus N: N processes (NCCL on GPUs; gloo with MODEL.DEVICE cpu); torchrun: see docs/scaling.md
    device = load_config(args.config_file, args.opts).MODEL.DEVICE  # also stops on a bad config before spawning
    launch(main_func, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), device=device)


if __name__ == "__main__":  # python -m cadet_d2.engine.train: the study runner's entry point
    cli()
