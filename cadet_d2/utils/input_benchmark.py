"""Speed of the input path: ways of reading ``.npy`` images, and the whole training mapper.

``read_strategies`` (ms per image, files in the page cache after one pass):

* ``load_fancy``: ``np.load`` then ``image[:, :, channels].astype(float32)`` (two copies);
* ``load_select``: ``np.load`` then :func:`~cadet_d2.data.npy.select_channels` (one ``astype``
  copy when every channel is used in file order) - what the mapper does;
* ``mmap_fancy`` / ``mmap_select``: the same on ``np.load(mmap_mode="r")`` (the file is mapped
  and only the copies touch it; channels are interleaved (H, W, C), so every page is read anyway).
"""
from __future__ import annotations

import glob
import os
import time
from typing import Callable

import numpy as np

from ..data.npy import select_channels
from .benchmark import upper_median


def _fancy(a: np.ndarray, idx: list[int]) -> np.ndarray:
    return a[:, :, idx].astype(np.float32)


READERS: dict[str, Callable[[str, list[int]], np.ndarray]] = {
    "load_fancy": lambda p, idx: _fancy(np.load(p, allow_pickle=False), idx),
    "load_select": lambda p, idx: select_channels(np.load(p, allow_pickle=False), idx),
    "mmap_fancy": lambda p, idx: _fancy(np.load(p, allow_pickle=False, mmap_mode="r"), idx),
    "mmap_select": lambda p, idx: select_channels(np.load(p, allow_pickle=False, mmap_mode="r"), idx),
}


def _run_all(reader: Callable[[str, list[int]], np.ndarray], files: list[str], idx: list[int]) -> None:
    for f in files:  # each result is dropped at once, as in a data loader (keeping 200 would time page faults)
        reader(f, idx)


def _time_per_item(fn: Callable[[], None], n: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) / n * 1e3)
    return upper_median(runs)


def read_strategies(image_dir: str, channel_sets: dict[str, list[int]], limit: int = 200,
                    repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median ms per image of each reader in :data:`READERS` for each channel set."""
    files = sorted(glob.glob(os.path.join(image_dir, "*.npy")))[:limit]
    if not files:
        raise FileNotFoundError(f"no .npy files in {image_dir}")
    for f in files:  # page cache
        np.load(f, allow_pickle=False)
    out: dict[str, dict[str, float]] = {}
    for set_name, idx in channel_sets.items():
        out[set_name] = {
            name: _time_per_item(lambda r=reader: _run_all(r, files, idx), len(files), repeats)
            for name, reader in READERS.items()
        }
    return out


def mapper_speed(cfg, limit: int = 100, repeats: int = 3) -> float:
    """Median ms per image of the training mapper (read, resize, flip, photometric, Instances)."""
    from detectron2.data import DatasetCatalog

    from ..data.datasets import register_from_config
    from ..data.mapper import MultiModalDatasetMapper

    register_from_config(cfg)
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:limit]
    mapper = MultiModalDatasetMapper(cfg, True)
    def run() -> None:
        for d in dicts:
            mapper(d)

    return _time_per_item(run, len(dicts), repeats)
