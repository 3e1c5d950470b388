"""Distributed training on the CPU: 2 gloo processes through tools/train_net.py's cli
(``--num-gpus 2 MODEL.DEVICE cpu``), and joining a group under torchrun."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import torch

from cadet_d2.engine.launch import pick_backend, under_torchrun
from test_resume import OPTS
from ddp_helper import weights_hash

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, "tests", "ddp_helper.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def test_backend_follows_the_device(monkeypatch):
    assert pick_backend("cpu") == "gloo"
    assert pick_backend("cuda") == ("nccl" if torch.cuda.is_available() else "gloo")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not under_torchrun()
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "1"), monkeypatch.setenv("LOCAL_RANK", "0")
    assert under_torchrun()


def test_two_cpu_processes_train_identical_weights_and_evaluate(tiny_root, tmp_path):
    """DDP (gloo) + gradient accumulation (no_sync) + the deterministic stream split over ranks +
    distributed COCO evaluation at the end; every rank ends with the same weights."""
    out = str(tmp_path / "ddp")
    opts = [o for o in OPTS]
    opts[opts.index("SOLVER.MAX_ITER") + 1] = "4"
    opts[opts.index("TEST.EVAL_PERIOD") + 1] = "0"  # the final evaluation only
    opts[opts.index("DATASETS.TEST") + 1] = "('synth_daytest1', 'synth_nighttest1')"  # 3 images each
    r = subprocess.run([sys.executable, HELPER, "train", "--num-gpus", "2", "--dist-url", "auto",
                        "--config-file", "configs/Base-CADET.yaml", *opts, "CADET.DATA.ROOT", tiny_root,
                        "DATALOADER.NUM_WORKERS", "0", "SOLVER.ACCUM_STEPS", "2", "OUTPUT_DIR", out],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    ranks = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "rank*.json")))]
    assert [x["rank"] for x in ranks] == [0, 1], log[-3000:]
    assert all(x["world_size"] == 2 and x["backend"] == "gloo" and x["ddp"] and x["iter"] == 4 for x in ranks)
    assert [x["stream"] for x in ranks] == [[0, 2], [1, 2]] and [x["local_rank"] for x in ranks] == [0, 1]
    assert ranks[0]["hash"] == ranks[1]["hash"], "the ranks' weights differ after training"
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    assert weights_hash(final["model"]) == ranks[0]["hash"]
    assert len(final["rng"]["per_rank"]) == 2  # every rank's RNG state, for exact resume
    with open(os.path.join(out, "eval_metrics.json")) as f:
        assert set(json.load(f)["datasets"]) == {"synth_daytest1", "synth_nighttest1"}
    with open(os.path.join(out, "log.txt")) as f0, open(os.path.join(out, "log.txt.rank1")) as f1:
        shares = f0.read().count("Start inference on 2 batches"), f1.read().count("Start inference on 1 batches")
    assert shares == (2, 2), shares  # each test set's 3 images split over the two ranks
    assert "1 images per batch on each of 2 rank(s)" in log and "effective batch 4 images" in log


def test_torchrun_processes_join_the_group(tmp_path):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        HELPER, "group", str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    groups = [json.load(open(tmp_path / f"group{i}.json")) for i in range(2)]
    for i, g in enumerate(groups):
        assert g == {"rank": i, "world_size": 2, "local_rank": i, "local_size": 2, "gathered": [0, 1],
                     "backend": "gloo", "env_rank": i}
