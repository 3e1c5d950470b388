"""Shared fixtures: tiny data roots written on the fly, and configs for tiny models."""
from __future__ import annotations

import os

import numpy as np
import pytest

from cadet_d2.engine import load_config

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: one intra-op thread per worker (and per process it starts), so N workers do
    # not oversubscribe the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def write_image(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array, allow_pickle=False)


def write_labels(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def make_tiny_root(root: str, n: int = 10, size: tuple[int, int] = (48, 64), seed: int = 0,
                   test_sets: tuple[str, ...] = ("daytest1", "nighttest1"), n_test: int = 3) -> str:
    """A data root with ``n`` images (H, W, 5) holding one warm box each, plus test sets."""
    rng = np.random.default_rng(seed)

    def fill(folder: str, count: int, prefix: str) -> None:
        for i in range(count):
            h, w = size
            img = rng.integers(0, 60, size=(h, w, 5), dtype=np.uint8)
            bw, bh = int(rng.integers(w // 6, w // 3)), int(rng.integers(h // 4, h // 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img[y0:y0 + bh, x0:x0 + bw, 3] = 230
            img[y0:y0 + bh, x0:x0 + bw, :3] = 150
            stem = f"{prefix}{i:04d}"
            write_image(os.path.join(folder, "images", stem + ".npy"), img)
            xc, yc = (x0 + bw / 2) / w, (y0 + bh / 2) / h
            write_labels(os.path.join(folder, "labels", stem + ".txt"), [f"0 {xc:.6f} {yc:.6f} {bw / w:.6f} {bh / h:.6f}"])

    fill(root, n, "img")
    for s in test_sets:
        fill(os.path.join(root, s), n_test, s)
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread: faster on a loaded 2-core machine (restored afterwards)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def registered_cfg(root: str, out: str, *opts: str):
    """``tiny_cfg`` with its data sets registered."""
    from cadet_d2.data import register_from_config

    cfg = tiny_cfg(root, out, *opts)
    register_from_config(cfg)
    return cfg


@pytest.fixture
def tiny_root(tmp_path) -> str:
    return make_tiny_root(str(tmp_path / "data"))


def tiny_cfg(root: str, output_dir: str, *opts: str, base: str = "configs/Base-CADET.yaml"):
    """A config for a tiny, fast model on ``root`` (MiT-b0 at 64 px, CPU)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return load_config(os.path.join(here, base), [
        "MODEL.DEVICE", "cpu", "CADET.DATA.ROOT", root, "CADET.BACKBONE.SIZE", "b0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "OUTPUT_DIR", output_dir,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        *opts,
    ])


def run_demo_tool(tool: str, tmp_path, *args: str):
    """``tools/<tool>.py --config-file configs/demo/demo_sum.yaml ARGS`` (``{tmp}`` in an argument is
    ``tmp_path``) in a subprocess importing this checkout's cadet_d2, one thread: the
    CompletedProcess."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fill = [a.replace("{tmp}", str(tmp_path)) for a in args]
    return subprocess.run([sys.executable, os.path.join(repo, "tools", f"{tool}.py"), "--config-file",
                           os.path.join(repo, "configs", "demo", "demo_sum.yaml"), *fill], cwd=repo,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=repo))

