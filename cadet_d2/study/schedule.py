"""The study-wide data and schedule of every run: ``data`` and ``schedule`` of a study file as
Detectron2 overrides (``CADET.DATA.*``, ``DATASETS.*``, ``SOLVER.*``)."""
from __future__ import annotations

import math

from .spec import Study


def data_opts(study: Study) -> list[str]:
    """CADET.DATA.ROOT/NAME (and the dataset names that follow from NAME)."""
    d, out = study.data, []
    if "root" in d:
        out += ["CADET.DATA.ROOT", str(d["root"])]
    if "name" in d:
        n = str(d["name"])
        tests = tuple(f"{n}_{s}" for s in study.report["sets"].values())
        out += ["CADET.DATA.NAME", n, "DATASETS.TRAIN", repr((f"{n}_train",)), "DATASETS.TEST", repr(tests)]
    return out


def count_train_images(cfg) -> int:
    """Images in the training sets of ``cfg`` (registering CADET.DATA)."""
    from detectron2.data import DatasetCatalog

    from ..data.datasets import register_from_config

    register_from_config(cfg)
    return sum(len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TRAIN)


def schedule_opts(study: Study, cfg_loader) -> tuple[list[str], str]:
    """SOLVER overrides of the study-wide schedule and a one-line description.

    ``epochs`` becomes ``MAX_ITER = ceil(epochs * train images / ims_per_batch)`` (the training
    images counted from the data root unless ``train_images`` is given); ``steps`` are fractions
    of MAX_ITER.
    """
    s = study.schedule
    if not s:  # a study of sensor-failure arms only may leave the schedule to each arm's config
        return [], "the schedule of each arm's config (SOLVER.* of its config file and the study's opts)"
    ims = int(s["ims_per_batch"])
    if "iterations" in s:
        max_iter, how = int(s["iterations"]), f"{int(s['iterations'])} iterations"
    else:
        n = s.get("train_images")
        if n is None:
            try:
                n = count_train_images(cfg_loader())
            except (OSError, ValueError) as e:
                return [], f"{s['epochs']} epochs: MAX_ITER unknown ({e})"
        max_iter = math.ceil(float(s["epochs"]) * int(n) / ims)
        how = f"{s['epochs']} epochs x {n} train images / batch {ims} = {max_iter} iterations"
    steps = sorted({round(float(f) * max_iter) for f in s.get("steps", [])} - {0})
    steps = [x for x in steps if x < max_iter]
    opts = ["SOLVER.IMS_PER_BATCH", str(ims), "SOLVER.BASE_LR", str(s["base_lr"]), "SOLVER.MAX_ITER", str(max_iter),
            "SOLVER.STEPS", repr(tuple(steps))]
    warm = ""
    if "warmup_iters" in s:
        w = min(int(s["warmup_iters"]), max(max_iter - 1, 0))
        opts += ["SOLVER.WARMUP_ITERS", str(w)]
        warm = f", warm-up {w}" + (f" (capped: warmup_iters {s['warmup_iters']} >= MAX_ITER)" if w < int(s["warmup_iters"]) else "")
    if "checkpoint_period" in s:
        opts += ["SOLVER.CHECKPOINT_PERIOD", str(int(s["checkpoint_period"]))]
    return opts, f"{how}, batch {ims}, lr {s['base_lr']}, LR steps at {steps}{warm}"
