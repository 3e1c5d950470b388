"""Distributed training on the CPU: 2 gloo processes through tools/train_net.py's cli
(``--num-gpus 2 MODEL.DEVICE cpu``), and joining a group under torchrun."""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch

from cadet_d2.engine.launch import check_device, pick_backend, planned_world_size, under_torchrun
from conftest import make_tiny_root
from test_resume import OPTS, _assert_identical, _final_state, _run, _run_and_kill
from ddp_helper import weights_hash

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, "tests", "ddp_helper.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def test_backend_follows_the_device(monkeypatch):
    assert pick_backend("cpu") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_backend("cuda") == "nccl" and pick_backend("cuda:1") == "nccl" and pick_backend("cpu") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("cadet_d2").addHandler(handler)
    try:
        assert pick_backend("cuda") == "gloo"
    finally:
        logging.getLogger("cadet_d2").removeHandler(handler)
    assert any("CUDA is not available: using the gloo backend" in m for m in seen), seen
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not under_torchrun()
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "1"), monkeypatch.setenv("LOCAL_RANK", "0")
    assert under_torchrun()


def test_device_checked_before_spawning(monkeypatch):
    """MODEL.DEVICE cuda without CUDA, more processes than GPUs, or a GPU index that is not there:
    a clear error in the launching process (cpu: any number of processes)."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_device("cpu", 4)
    with pytest.raises(RuntimeError, match="MODEL.DEVICE 'cuda' but CUDA is not available here .*add MODEL.DEVICE cpu"):
        check_device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda", 2)
    check_device("cuda:1", 1)
    with pytest.raises(RuntimeError, match="3 processes per machine on MODEL.DEVICE 'cuda' but this machine has 2 GPU"):
        check_device("cuda", 3)
    with pytest.raises(RuntimeError, match="MODEL.DEVICE 'cuda:2': this machine has GPUs cuda:0 to cuda:1"):
        check_device("cuda:2", 1)
    assert planned_world_size(2, 3) == 6
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "8"), monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert planned_world_size(1, 1) == 8  # torchrun's world
    with pytest.raises(RuntimeError, match="4 processes per machine"):
        check_device("cuda", 1)


def _ddp_cmd(root: str, out: str, *extra: str) -> list[str]:
    """2 gloo processes, 4 iterations of 2 micro-batches, checkpoints at iterations 1 and 3, the
    final evaluation only, on two test sets of 3 images."""
    opts = list(OPTS)
    opts[opts.index("SOLVER.MAX_ITER") + 1] = "4"
    opts[opts.index("TEST.EVAL_PERIOD") + 1] = "0"
    opts[opts.index("DATASETS.TEST") + 1] = "('synth_daytest1', 'synth_nighttest1')"
    return [sys.executable, HELPER, "train", "--num-gpus", "2", "--dist-url", "auto",
            "--config-file", "configs/Base-CADET.yaml", *extra, *opts, "CADET.DATA.ROOT", root,
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.ACCUM_STEPS", "2", "OUTPUT_DIR", out]


@pytest.fixture(scope="module")
def ddp_root(tmp_path_factory) -> str:
    return make_tiny_root(str(tmp_path_factory.mktemp("ddp") / "data"))


@pytest.fixture(scope="module")
def ddp_run(ddp_root, tmp_path_factory) -> tuple[str, str]:
    """An uninterrupted 2-process run: its OUTPUT_DIR and log."""
    out = str(tmp_path_factory.mktemp("ddp") / "uninterrupted")
    r = subprocess.run(_ddp_cmd(ddp_root, out), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    return out, log


def test_two_cpu_processes_train_identical_weights_and_evaluate(ddp_run):
    """DDP (gloo) + gradient accumulation (no_sync) + the deterministic stream split over ranks +
    distributed COCO evaluation at the end; every rank ends with the same weights."""
    out, log = ddp_run
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


def test_two_process_kill_and_resume_gives_identical_weights(ddp_root, ddp_run, tmp_path):
    """SIGKILL both processes after the checkpoint of iteration 1, rerun with --resume: the same
    final weights, optimizer and scheduler state as the uninterrupted 2-process run, bit for bit."""
    out = str(tmp_path / "killed")
    _run_and_kill(_ddp_cmd(ddp_root, out), out, after="model_0000001.pth")
    log = _run(_ddp_cmd(ddp_root, out, "--resume"))
    assert re.search(r"Starting training from iteration 2\b", log), log[-3000:]
    resumed = _final_state(out)
    assert resumed["iteration"] == 3 and len(resumed["rng"]["per_rank"]) == 2
    _assert_identical(_final_state(ddp_run[0]), resumed)
    ranks = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "rank*.json")))]
    assert len(ranks) == 2 and ranks[0]["hash"] == ranks[1]["hash"] == weights_hash(resumed["model"])


def test_torchrun_processes_join_the_group(tmp_path):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        HELPER, "group", str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    groups = [json.load(open(tmp_path / f"group{i}.json")) for i in range(2)]
    for i, g in enumerate(groups):
        assert g == {"rank": i, "world_size": 2, "local_rank": i, "local_size": 2, "gathered": [0, 1],
                     "backend": "gloo", "env_rank": i}
