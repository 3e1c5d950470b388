"""Helper of tests/test_ddp.py (not a test module): runs in the processes of a distributed job.

    python tests/ddp_helper.py train TRAIN_NET_ARGS...   # tools/train_net.py's cli, plus a hook
    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_helper.py group OUT_DIR

``train``: every rank writes ``OUTPUT_DIR/rank{r}.json`` after training: a hash of its model
weights and its stream rank/world size (a :class:`WriteRankState` hook, given to the trainer
through ``cadet_d2.engine.train.main``'s ``extra_hooks``).
``group``: checks the process group and Detectron2's local group that launch() sets up under
torchrun, writing ``OUT_DIR/group{r}.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from cadet_d2.engine.train import main


def weights_hash(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def local_ranks() -> int:
    """cadet_d2's local rank, checked against Detectron2's where Detectron2 has the group."""
    from cadet_d2.engine.compat import HAS_LOCAL_PROCESS_GROUP
    from cadet_d2.engine.launch import local_rank

    if HAS_LOCAL_PROCESS_GROUP:
        assert comm.get_local_rank() == local_rank() and comm.get_local_size() == int(os.environ["LOCAL_WORLD_SIZE"])
    return local_rank()


class WriteRankState(HookBase):
    def after_train(self) -> None:
        model = self.trainer.model
        model = getattr(model, "module", model)  # DDP
        loader = self.trainer.data_loader
        out = {"rank": comm.get_rank(), "world_size": comm.get_world_size(), "local_rank": local_ranks(),
               "hash": weights_hash(model.state_dict()), "iter": self.trainer.iter,
               "stream": [loader.rank, loader.world_size], "ddp": model is not self.trainer.model,
               "backend": torch.distributed.get_backend() if comm.get_world_size() > 1 else None}
        with open(os.path.join(self.trainer.cfg.OUTPUT_DIR, f"rank{comm.get_rank()}.json"), "w") as f:
            json.dump(out, f)


def main_with_rank_state(args) -> None:
    """``tools/train_net.py``'s main with a :class:`WriteRankState` hook (picklable for spawn)."""
    return main(args, extra_hooks=[WriteRankState()])


def check_group(out_dir: str) -> None:
    import torch.distributed as dist

    got = comm.all_gather(comm.get_rank())
    out = {"rank": comm.get_rank(), "world_size": comm.get_world_size(), "local_rank": local_ranks(),
           "local_size": int(os.environ["LOCAL_WORLD_SIZE"]), "gathered": got, "backend": dist.get_backend(),
           "env_rank": int(os.environ["RANK"])}
    with open(os.path.join(out_dir, f"group{comm.get_rank()}.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        from cadet_d2.engine.train import cli

        cli(sys.argv[2:], main_func=main_with_rank_state)
    else:
        from cadet_d2.engine.launch import launch

        launch(check_group, 1, args=(sys.argv[2],), device="cpu")
