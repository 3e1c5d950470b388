"""Exact resume: SIGKILL a tools/train_net.py run after a checkpoint, rerun with --resume, and get
bit-identical final weights to an uninterrupted run (CPU, deterministic settings)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import make_tiny_root, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_ITER = 10
# A tiny, fast model (narrow FPN and box head) with drop path on, so that the model's own
# randomness matters; an evaluation every 3 iterations (it must not shift the randomness).
OPTS = [
    "MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "CADET.BACKBONE.DROP_PATH_RATE", "0.3",
    "CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum",
    "INPUT.MIN_SIZE_TRAIN", "(56, 64, 72)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(MAX_ITER),
    "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(6,)", "SOLVER.CHECKPOINT_PERIOD", "2",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "DATASETS.TEST", "('synth_daytest1',)", "TEST.EVAL_PERIOD", "3", "SEED", "7",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _cmd(root: str, out: str, workers: int, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", "configs/Base-CADET.yaml",
            *extra, *OPTS, "CADET.DATA.ROOT", root, "DATALOADER.NUM_WORKERS", str(workers), "OUTPUT_DIR", out]


def _run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r.stdout + r.stderr


def _run_and_kill(cmd: list[str], out: str, after: str = "model_0000003.pth", timeout: float = 240) -> None:
    """Start a run and SIGKILL it, with every process it started (its own session), as soon as
    checkpoint ``after`` exists; fail (with the run's log) when the run ends first or ``after`` is
    not there within ``timeout`` seconds."""
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "killed_run.log")
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline, killed, late = time.time() + timeout, False, False
        try:
            while p.poll() is None:
                if os.path.exists(os.path.join(out, after)):
                    os.killpg(p.pid, signal.SIGKILL)  # the run and, with --num-gpus N, its worker processes
                    killed = True
                    break
                if time.time() > deadline:
                    late = True
                    break
                time.sleep(0.005)
        finally:
            if p.poll() is None and not killed:
                p.kill()
            p.wait()
    with open(log_path) as f:
        tail = f.read()[-3000:]
    assert not late, f"{after} was not written within {timeout:.0f} s; the run's log ends:\n{tail}"
    assert killed and p.returncode == -signal.SIGKILL, f"the run ended (rc {p.returncode}) before it was killed:\n{tail}"
    assert not os.path.exists(os.path.join(out, "model_final.pth"))


def _final_state(out: str) -> dict:
    return torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)


def _assert_identical(a: dict, b: dict) -> None:
    ma, mb = a["model"], b["model"]
    assert set(ma) == set(mb)
    differing = [k for k in ma if not torch.equal(ma[k], mb[k])]
    assert not differing, f"{len(differing)} of {len(ma)} tensors differ, e.g. {differing[:5]}"
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert set(oa) == set(ob) and oa
    for k in oa:
        assert torch.equal(oa[k]["momentum_buffer"], ob[k]["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["last_epoch"] == a["iteration"] + 1


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("resume") / "data")
    make_tiny_root(root, n=12)
    # some portrait images, so that aspect-ratio grouping has two buckets
    for i in range(4):
        write_image(os.path.join(root, "images", f"img{i:04d}.npy"),
                    np.random.default_rng(i).integers(0, 255, size=(64, 40, 5), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("resume") / "uninterrupted")
    _run(_cmd(data_root, out, 0))
    return _final_state(out)


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_and_resume_gives_identical_weights(data_root, uninterrupted, tmp_path, workers):
    out = str(tmp_path / "killed")
    _run_and_kill(_cmd(data_root, out, workers), out)
    log = _run(_cmd(data_root, out, workers, "--resume"))
    start = int(re.search(r"Starting training from iteration (\d+)", log).group(1))
    assert 2 <= start < MAX_ITER, f"did not resume mid-run (start {start})"
    resumed = _final_state(out)
    assert resumed["iteration"] == MAX_ITER - 1
    _assert_identical(uninterrupted, resumed)
    # our own checkpoints load with weights_only=True (checked by _final_state), RNG included
    assert set(resumed) >= {"model", "trainer", "optimizer", "scheduler", "rng", "data_stream", "iteration"}
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
