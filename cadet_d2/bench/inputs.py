"""Speed of the input path: ways of reading ``.npy`` images, the whole training mapper, and the
loader's images/s for ``.npy`` and JPEG pairs at LLVIP size (:func:`loader_throughput`).

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
from ..utils.timing import upper_median


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


def write_llvip_like(folder: str, n: int = 20, size: tuple[int, int] = (1024, 1280), seed: int = 0,
                     quality: int = 90, npy: bool = True) -> tuple[str, str]:
    """Synthetic data at LLVIP size: ``folder/npy`` (5-channel ``.npy``: rgb, thermal, event; not
    with ``npy`` False) and ``folder/pairs`` (``train/pairs.csv`` naming a 3-channel visible JPEG and a 3-channel grey
    infrared JPEG per image, as LLVIP ships them), the same pictures, unlabeled. Scenes are blurred
    noise plus a few boxes, so the JPEGs are about LLVIP's size (~150-250 KB visible)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    npy_dir, pair_dir = os.path.join(folder, "npy", "images"), os.path.join(folder, "pairs", "train")
    raw = os.path.join(folder, "pairs", "raw")
    for d in (npy_dir, pair_dir, raw):
        os.makedirs(d, exist_ok=True)
    rows = ["stem,rgb,thermal"]
    for i in range(n):
        base = cv2.GaussianBlur(rng.integers(0, 256, (h // 8, w // 8, 4), dtype=np.uint8), (5, 5), 0)
        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 200))
            img[y0:y0 + 200, x0:x0 + 100] = rng.integers(100, 256, 4)
        stem = f"{i:06d}"
        rgb, ir = img[:, :, :3], img[:, :, 3]
        if npy:
            np.save(os.path.join(npy_dir, stem + ".npy"),
                    np.concatenate([rgb, ir[:, :, None], np.zeros((h, w, 1), np.uint8)], axis=2))
        cv2.imwrite(os.path.join(raw, stem + "_vis.jpg"), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        cv2.imwrite(os.path.join(raw, stem + "_ir.jpg"), np.repeat(ir[:, :, None], 3, axis=2),
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
        rows.append(f"{stem},../raw/{stem}_vis.jpg,../raw/{stem}_ir.jpg")
    with open(os.path.join(pair_dir, "pairs.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    return os.path.join(folder, "npy"), os.path.join(folder, "pairs")


def write_pairs_index(folder: str, pairs: list[tuple[str, str, str]]) -> str:
    """A data root ``folder`` whose ``train/pairs.csv`` names existing (stem, rgb, thermal) files."""
    os.makedirs(os.path.join(folder, "train"), exist_ok=True)
    with open(os.path.join(folder, "train", "pairs.csv"), "w", encoding="utf-8") as f:
        f.write("stem,rgb,thermal\n" + "".join(f"{s},{os.path.abspath(r)},{os.path.abspath(t)}\n" for s, r, t in pairs))
    return folder


def loader_throughput(make_cfg: Callable[[list], object], roots: list[tuple[str, str]], short_sides: list[int],
                      limit: int = 20, repeats: int = 3) -> list[dict]:
    """Images/s of the training mapper in one process with one thread (as a loader worker) for
    each data root of ``roots`` ([(label, root)]; a root with ``train/pairs.csv`` is read as JPEG
    pairs, with and without reduced decoding, else as a ``.npy`` root) at each training shorter
    side. After one untimed pass (page cache, grey check), each of ``repeats`` passes is timed in
    wall time and in this process's CPU time; the medians are reported (CPU time is what one
    worker with a core of its own would take; wall time also counts waiting on a shared machine).

    ``make_cfg(opts)`` -> a config with those overrides (rgb+thermal, no test sets)."""
    import cv2
    import torch
    from detectron2.data import DatasetCatalog

    from ..data.datasets import register_from_config
    from ..data.mapper import MultiModalDatasetMapper

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = []
    for label, root in roots:
        pairs = os.path.isfile(os.path.join(root, "train", "pairs.csv"))
        for side in short_sides:
            for reduced in ((False, True) if pairs else (False,)):
                opts = ["CADET.DATA.ROOT", root, "CADET.DATA.TRAIN_SET", "train" if pairs else "",
                        "INPUT.MIN_SIZE_TRAIN", f"({side},)", "CADET.INPUT.REDUCED_DECODE", str(reduced)]
                cfg = make_cfg(opts)
                register_from_config(cfg)
                dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:limit]
                mapper = MultiModalDatasetMapper(cfg, True)
                for d in dicts:
                    mapper(d)
                wall, cpu = [], []
                for _ in range(repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    for d in dicts:
                        mapper(d)
                    wall.append((time.perf_counter() - t0) / len(dicts) * 1e3)
                    cpu.append((time.process_time() - c0) / len(dicts) * 1e3)
                w, c = float(np.median(wall)), float(np.median(cpu))
                rows.append({"data": label, "format": "jpeg pairs" if pairs else "npy 5-channel",
                             "size": f"{dicts[0]['height']}x{dicts[0]['width']}", "images": len(dicts),
                             "short_side": side, "reduced_decode": reduced,
                             "decode_factor": mapper.decode_factor(dicts[0]) if pairs else 1,
                             "cpu_ms_per_image": round(c, 1), "images_per_cpu_s": round(1000.0 / c, 1),
                             "wall_ms_per_image": round(w, 1), "images_per_s_wall": round(1000.0 / w, 1)})
    return rows


def check_data_speed(folder: str, n: int = 200, workers: tuple[int, ...] = (1, 2), repeats: int = 2) -> list[dict]:
    """Pairs/s of ``check_root`` (tools/check_data.py) on ``n`` LLVIP-size JPEG pairs written to
    ``folder``: every pixel decoded with each number of ``workers``, and headers only; the runs
    alternate, ``repeats`` rounds, the best of each kept. Each row: mode, workers, seconds, pairs/s."""
    import time

    from ..data.check import check_root

    _, root = write_llvip_like(folder, n=n, npy=False)
    modes = [("decode", w) for w in workers] + [("headers", 1)]
    best: dict = {}
    for _ in range(repeats):
        for mode, w in modes:
            started = time.perf_counter()
            report = check_root(root, num_classes=1, progress=False, headers_only=mode == "headers", workers=w)
            seconds = time.perf_counter() - started
            if report.errors:
                raise RuntimeError(f"check_data found errors in the benchmark's own pairs: {report.errors[0]}")
            best[(mode, w)] = min(seconds, best.get((mode, w), float("inf")))
    return [{"mode": mode, "workers": w, "pairs": n, "seconds": round(best[(mode, w)], 2),
             "pairs_per_s": round(n / best[(mode, w)], 1)} for mode, w in modes]
