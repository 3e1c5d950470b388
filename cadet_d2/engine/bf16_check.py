"""Whether bf16 autocast trains faster than fp32 on this CPU: measured on the configured model, once per machine.

The measure is the configured detector's own training step (forward, backward, SGD step) on
one random image of ``PROBE_SIZE``, fp32 and bf16 autocast alternating (``PROBE_WARMUP`` untimed
rounds, then ``PROBE_ROUNDS`` timed): ``speed`` = fp32 time / bf16 time (> 1: bf16 is faster).
The step's parts keep their shares at a small image better than a set of ops does: the RoI
box head, the FPN and the RPN see as many RoIs and channels as in training, only the maps are
smaller. It costs one model build and four steps of the small image (docs/benchmarks.md has
the figures and the command that times it).

CPUs without native bf16 in oneDNN (no AVX-512; e.g. Zen 3 with AVX2) are not measured: there
bf16 convolutions and matrix products run reference kernels, 10-50x slower than fp32
(docs/benchmarks.md), and a bf16 step would take minutes.

The result is cached in ``$XDG_CACHE_HOME/cadet_d2/bf16_speed.json`` (default
``~/.cache/cadet_d2``), one entry per (CPU name, family, model, flags; torch version; model
fingerprint), so it runs once per machine and model. ``CADET.SOLVER.BF16_CHECK`` chooses:
``cached`` (default: measure when no entry), ``measure`` (measure again, update the cache),
``off`` (no check, no advice). A config asking for fp32 is never measured: where the cache
already says bf16 is clearly faster (from a bf16 run on this machine and model), it gets a line
saying so.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import time

import torch

from ..utils.machine import cpu_info

logger = logging.getLogger("cadet_d2")

CHECK_MODES = ("cached", "measure", "off")
PROBE_SIZE = (160, 224)  # (H, W), multiples of 32: no padding
PROBE_WARMUP, PROBE_ROUNDS = 1, 1
CACHE_FILE = "bf16_speed.json"
# bf16 counts as faster (advice for fp32 configs) only above this measured speed
FASTER = 1.15


def cache_path() -> str:
    """The cache file: ``$XDG_CACHE_HOME/cadet_d2/bf16_speed.json``, else ``~/.cache/cadet_d2/...``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "cadet_d2", CACHE_FILE)


def model_fingerprint(cfg) -> str:
    """The config keys that decide the step's op mix (backbone, fusion, heads, channels)."""
    return (f"{cfg.MODEL.BACKBONE.NAME} MiT-{cfg.CADET.BACKBONE.SIZE} {cfg.CADET.FUSION.NAME} "
            f"in{len(cfg.MODEL.PIXEL_MEAN)} fpn{cfg.MODEL.FPN.OUT_CHANNELS} "
            f"rois{cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE} fc{cfg.MODEL.ROI_BOX_HEAD.FC_DIM}")


def cache_key(cfg, info: dict | None = None) -> str:
    """The cache entry of this CPU, torch version and model."""
    info = cpu_info() if info is None else info
    flags = hashlib.sha1(" ".join(sorted(info["flags"])).encode()).hexdigest()[:12]
    return (f"{info['name']} | family {info['family']} model {info['model']} | flags {flags} | "
            f"torch {torch.__version__} | {model_fingerprint(cfg)}")


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        logger.warning(f"[cadet] bf16 speed cache {path} unreadable ({e}): measuring again")
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: str, key: str, entry: dict) -> None:
    from ..utils.io import atomic_write_json

    data = _read_cache(path)
    data[key] = entry
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_json(path, data)
    except OSError as e:
        logger.warning(f"[cadet] bf16 speed cache {path} not written ({e}): the next run measures again")


def measure_bf16_speed(cfg, height: int = PROBE_SIZE[0], width: int = PROBE_SIZE[1], rounds: int = PROBE_ROUNDS,
                       warmup: int = PROBE_WARMUP) -> dict:
    """fp32 and bf16 training steps of ``cfg``'s model (built afresh on the CPU, random
    weights, not compiled; SGD with lr 0) on one random (C, height, width) image, alternating. Returns
    ``speed`` (fp32 s / bf16 s, summed over the timed rounds), ``fp32_s``, ``bf16_s``,
    ``seconds`` (the whole measure), ``size``, ``threads``."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from ..utils.synthetic import random_batch
    from ..utils.timing import alternating_timings
    from .precision import Precision
    from .step import AccumAMPTrainer

    start = time.perf_counter()
    probe = copy.deepcopy(cfg)
    probe.defrost()
    probe.MODEL.DEVICE = "cpu"
    probe.CADET.BACKBONE.PRETRAINED = ""
    probe.CADET.BACKBONE.COMPILE = False
    data = random_batch(1, len(cfg.MODEL.PIXEL_MEAN), height, width, seed=0)
    steps = {}
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        torch.manual_seed(0)
        model = build_model(probe)  # one model for both: lr 0 leaves its weights as they are
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
            steps[name] = AccumAMPTrainer(model, itertools.repeat(data), opt, precision=Precision("cpu", dtype)).run_step
        with EventStorage(0):
            times, _ = alternating_timings(steps, rounds, warmup)
    fp32, bf16 = sum(times["fp32"]), sum(times["bf16"])
    return {"speed": fp32 / bf16, "fp32_s": fp32 / rounds, "bf16_s": bf16 / rounds,
            "seconds": time.perf_counter() - start, "size": [height, width], "threads": torch.get_num_threads(),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}


def bf16_speed(cfg, mode: str | None = None, native: bool | None = None, measure: bool = True) -> dict | None:
    """This machine's bf16 speed entry for ``cfg``'s model (``speed`` = fp32 / bf16 step time):
    from the cache, or measured and cached (``mode`` default ``CADET.SOLVER.BF16_CHECK``;
    ``measure`` False: the cache only, None without an entry). None with mode ``off``. Without native bf16 (``native``, default
    :func:`~cadet_d2.engine.precision.cpu_has_fast_bf16`) nothing is measured: the entry has
    ``speed`` None and ``native`` False."""
    from .precision import cpu_has_fast_bf16

    mode = cfg.CADET.SOLVER.BF16_CHECK if mode is None else mode
    if mode not in CHECK_MODES:
        raise ValueError(f"bf16 check mode {mode!r}: choose from {list(CHECK_MODES)}")
    if mode == "off":
        return None
    if not (cpu_has_fast_bf16() if native is None else native):
        return {"speed": None, "native": False}
    path, key = cache_path(), cache_key(cfg)
    if mode == "cached":
        entry = _read_cache(path).get(key)
        if isinstance(entry, dict) and isinstance(entry.get("speed"), (int, float)):
            return {**entry, "cached": True}
    if not measure:
        return None
    logger.info(f"[cadet] measuring bf16 against fp32 on this CPU (the configured model's training step at "
                f"{PROBE_SIZE[0]} x {PROBE_SIZE[1]}, once per machine; cached in {path}; "
                "CADET.SOLVER.BF16_CHECK off skips it)")
    entry = {**measure_bf16_speed(cfg), "native": True}
    _write_cache(path, key, entry)
    return {**entry, "cached": False}


def bf16_advice(entry: dict | None, bf16_configured: bool) -> tuple[int, str] | None:
    """(log level, message) for a :func:`bf16_speed` entry, or None for no message: a warning
    where bf16 is configured and slower (or not native), an info line where fp32 is configured
    and bf16 measured clearly faster; nothing where bf16 is configured and faster."""
    if entry is None:
        return None
    if not entry.get("native", True):
        if not bf16_configured:
            return None
        return (logging.WARNING, "[cadet] bf16 autocast on this CPU: oneDNN reports no native bf16 (no AVX-512 "
                "BF16/AMX, e.g. AVX2 only), so bf16 convolutions and matrix products run reference kernels, "
                "10-50x slower than fp32 (measured on a Zen 3: a whole step 16.8x slower); set "
                "SOLVER.AMP.ENABLED False (docs/benchmarks.md)")
    speed = entry["speed"]
    where = (f"the configured model's training step at {entry.get('size', list(PROBE_SIZE))[0]} x "
             f"{entry.get('size', list(PROBE_SIZE))[1]}, {'cached' if entry.get('cached') else 'measured now'}")
    if bf16_configured and speed < 1.0:
        return (logging.WARNING, f"[cadet] bf16 autocast ran at {speed:.2f}x fp32's speed on this CPU ({where}): "
                "consider SOLVER.AMP.ENABLED False. `tools/benchmark.py --mode ops` times each op, "
                "--mode train --vs the whole step (docs/benchmarks.md)")
    if not bf16_configured and speed >= FASTER:
        return (logging.INFO, f"[cadet] bf16 would be {speed:.2f}x faster here ({where}): SOLVER.AMP.ENABLED True "
                "CADET.SOLVER.AMP_DTYPE bfloat16")
    return None
