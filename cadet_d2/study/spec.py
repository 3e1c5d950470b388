"""The study file: a plain YAML describing the arms of an ablation study (schema: docs/study.md).

:func:`load_study` reads it, fills defaults and checks it, so that a mistake stops before any
training with the offending key.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

DEFAULT_PIXEL_STATS = {
    "rgb": {"mean": [74.0, 76.0, 75.0], "std": [65.0, 66.0, 68.0]},
    "thermal": {"mean": [92.0], "std": [46.0]},
    "event": {"mean": [3.0], "std": [24.0]},
}
DEFAULT_REPORT = {
    "sets": {"test": "test", "day": "daytest1", "night": "nighttest1"},  # label -> dataset suffix
    "rank_by": {"set": "test", "metric": "AP"},
    "bootstrap": {"resamples": 1000, "seed": 0, "set": "test", "level": 0.95},
    "flops_size": [320, 416],
}
# signal_seconds: ask SLURM for SIGUSR1 that long before the time limit (0: no signal); requeue:
# the jobs may be requeued (after a preemption, or by the training's signal hook).
DEFAULT_SLURM = {"partition": "", "time": "24:00:00", "gpus": 1, "cpus": 8, "mem": "64G", "parallel": 8,
                 "setup": "", "extra": [], "signal_seconds": 300, "requeue": True}
TOP_KEYS = {"name", "base_config", "output", "seeds", "backbone", "data", "schedule", "opts", "env",
            "baselines", "fusion_studies", "modality", "report", "slurm", "train_script", "include_optional",
            "sensor_failure"}
SENSOR_KEYS = {"arms", "baseline", "dropout", "eval"}
TRAININGS = ("nodrop", "drop")  # a sensor-failure arm's two trainings: without and with modality dropout
SCHEDULE_KEYS = {"epochs", "iterations", "train_images", "ims_per_batch", "base_lr", "steps",
                 "warmup_iters", "checkpoint_period"}


class StudyError(ValueError):
    """The study file is malformed; the message names the file, the line when known, and the key."""

    def __init__(self, msg: str, key: str = ""):
        super().__init__(msg)
        self.key = key  # the offending key's path (``fusion_studies[0].options``), for its line


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last
    silently: a second arm of the same name, a second ``schedule``)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise StudyError(f"{key_node.start_mark.line + 1}: {key!r} given twice in one mapping (first on "
                                 f"line {seen[key]}): YAML would silently keep the last")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _key_lines(node, prefix: str = "", out: Optional[dict] = None) -> dict[str, int]:
    """{key path: 1-based line} of every mapping key and list item under ``node`` (paths as the
    error messages write them: ``schedule.steps``, ``fusion_studies[1].options``)."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = f"{prefix}.{k.value}" if prefix else str(k.value)
            out.setdefault(path, k.start_mark.line + 1)
            _key_lines(v, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.setdefault(f"{prefix}[{i}]", v.start_mark.line + 1)
            _key_lines(v, f"{prefix}[{i}]", out)
    return out


def _read_yaml(path: str) -> tuple[dict, dict[str, int]]:
    """The study file's mapping and the line of each key path."""
    with open(path, encoding="utf-8") as f:
        loader = _Loader(f)
        try:
            node = loader.get_single_node()
            raw = loader.construct_document(node) if node is not None else {}
        except StudyError as e:  # "LINE: ..."
            raise StudyError(f"{path}:{e}") from None
        except yaml.YAMLError as e:
            raise StudyError(f"{path}: not valid YAML: {e}") from None
        finally:
            loader.dispose()
    return raw if raw is not None else {}, _key_lines(node) if node is not None else {}


@dataclass
class GridAxis:
    """One phase-2 axis: a config key, its values, and the short tag used in run names."""

    tag: str
    key: str
    values: list


@dataclass
class FusionStudy:
    """A fusion module studied over stage sets (phase 1), then over options on the top-k (phase 2)."""

    name: str
    fusion: str
    default: str
    backbone: str
    stage_sets: list[list[int]]
    options: dict[str, Any]
    top_k: int = 0
    grid: list[GridAxis] = field(default_factory=list)
    optional: bool = False  # left out of plan/run/report unless the study includes optional studies


@dataclass
class SensorFailure:
    """The sensor-failure arms: each detector config trained without (``nodrop``) and with
    (``drop``, adding ``dropout``) modality dropout; every run adds ``eval`` (the test-time
    conditions, ``CADET.TEST.DROP_MODALITIES`` x ``CADET.TEST.CORRUPT``)."""

    arms: dict[str, str]  # detector name -> config file
    baseline: str  # a detector the report compares every other with ('' = none)
    dropout: list[str]  # KEY VALUE ... of the drop trainings
    eval: list[str]  # KEY VALUE ... of every run


@dataclass
class Study:
    """A parsed study file (paths as written; relative ones are relative to the working directory)."""

    path: str
    name: str
    base_config: str
    output: str
    seeds: list[int]
    backbone: str
    data: dict
    schedule: dict
    opts: list[str]
    env: dict[str, str]
    baseline_fusion: str
    baseline_sizes: list[str]
    fusion_studies: list[FusionStudy]
    modality_sets: list[list[str]]
    modality_fusion: str
    modality_backbone: str
    pixel_stats: dict
    report: dict
    slurm: dict
    train_script: str  # a training script run as ``python <script>``; '' = ``python -m cadet_d2.engine.train``
    raw: dict = field(repr=False, default_factory=dict)
    include_optional: bool = False  # the file's ``include_optional``, or ``ablate.py ... --with-optional``
    sensor: Optional[SensorFailure] = None  # the file's ``sensor_failure`` block

    @property
    def planned_studies(self) -> list[FusionStudy]:
        """The fusion studies that are planned, run and reported: all of them when optional ones
        are included, else the non-optional ones."""
        return [fs for fs in self.fusion_studies if self.include_optional or not fs.optional]

    @property
    def left_out_studies(self) -> list[FusionStudy]:
        """The optional fusion studies that are not included."""
        return [fs for fs in self.fusion_studies if fs.optional and not self.include_optional]


def _err(path: str, key: str, msg: str, line_key: str = "") -> StudyError:
    """``line_key``: the key path whose line to name, when not ``key`` (:func:`load_study` adds it)."""
    return StudyError(f"{path}: {key}: {msg}", line_key or key)


def _check_keys(path: str, where: str, node: dict, allowed: set) -> None:
    if not isinstance(node, dict):
        raise _err(path, where, f"must be a mapping, got {type(node).__name__}")
    extra = sorted(set(node) - allowed, key=str)
    if extra:
        first = str(extra[0]) if where == "(top level)" else f"{where}.{extra[0]}"
        raise _err(path, where, f"unknown key(s) {extra}; allowed: {sorted(allowed)}", first)


def _merge(default: dict, given: dict | None) -> dict:
    out = copy.deepcopy(default)
    for k, v in (given or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _bool(path: str, key: str, value) -> bool:
    """A YAML boolean (true/false); anything else (``yes-please``, 1, "true") stops with the key."""
    if not isinstance(value, bool):
        raise _err(path, key, f"must be true or false, got {value!r}")
    return value


def _stage_sets(path: str, key: str, sets) -> list[list[int]]:
    if not isinstance(sets, list) or not sets:
        raise _err(path, key, "must be a non-empty list of stage lists, e.g. [[1], [2, 3]]")
    out = []
    for s in sets:
        s = [s] if isinstance(s, int) else s
        if not isinstance(s, list) or not s or any(x not in (1, 2, 3, 4) for x in s):
            raise _err(path, key, f"{s!r} is not a stage list (stages are 1, 2, 3, 4)")
        out.append(sorted(set(s)))
    if len({tuple(s) for s in out}) != len(out):
        raise _err(path, key, "has the same stage set twice")
    return out


def _check_option_keys(path: str, where: str, keys) -> None:
    for k in keys:
        if not isinstance(k, str) or "." not in k:
            raise _err(path, where, f"{k!r} is not a full config key (e.g. CADET.FUSION.CSSA.THRESHOLD)")
        if k.startswith("SOLVER.") or k in ("SEED", "OUTPUT_DIR"):
            raise _err(path, where, f"{k} may not vary per arm: the schedule, seed and output are study-wide, "
                                    "so that every arm and its baseline share them")


def _fusion_study(path: str, i: int, node: dict, backbone: str) -> FusionStudy:
    where = f"fusion_studies[{i}]"
    _check_keys(path, where, node, {"name", "fusion", "default", "backbone", "stage_sets", "options", "phase2",
                                    "optional"})
    for k in ("name", "fusion", "stage_sets"):
        if k not in node:
            raise _err(path, where, f"missing {k!r}")
    options = dict(node.get("options") or {})
    _check_option_keys(path, f"{where}.options", options)
    fs = FusionStudy(name=str(node["name"]), fusion=str(node["fusion"]), default=str(node.get("default", "frm_ffm")),
                     backbone=str(node.get("backbone", backbone)),
                     stage_sets=_stage_sets(path, f"{where}.stage_sets", node["stage_sets"]), options=options,
                     optional=_bool(path, f"{where}.optional", node.get("optional", False)))
    p2 = node.get("phase2")
    if p2:
        _check_keys(path, f"{where}.phase2", p2, {"top_k", "grid"})
        fs.top_k = int(p2.get("top_k", 0))
        if not 1 <= fs.top_k <= len(fs.stage_sets):
            raise _err(path, f"{where}.phase2.top_k", f"must lie in 1..{len(fs.stage_sets)} (the phase-1 stage sets)")
        grid = p2.get("grid") or {}
        if not isinstance(grid, dict) or not grid:
            raise _err(path, f"{where}.phase2.grid", "must map a tag to {key: CONFIG.KEY, values: [...]}")
        for tag, axis in grid.items():
            _check_keys(path, f"{where}.phase2.grid.{tag}", axis, {"key", "values"})
            values = axis.get("values")
            if not isinstance(values, list) or not values:
                raise _err(path, f"{where}.phase2.grid.{tag}.values", "must be a non-empty list")
            _check_option_keys(path, f"{where}.phase2.grid.{tag}.key", [axis.get("key")])
            fs.grid.append(GridAxis(str(tag), axis["key"], values))
    return fs


def parse_seeds(path: str, seeds) -> list[int]:
    """A study file's ``seeds``: a count N (seeds 0..N-1) or a list of distinct integers."""
    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)  # YAML's true is not a seed

    if is_int(seeds) and seeds >= 1:
        return list(range(seeds))
    if isinstance(seeds, list) and seeds and all(map(is_int, seeds)) and len(set(seeds)) == len(seeds):
        return list(seeds)
    raise _err(path, "seeds", "must be a count N >= 1 (seeds 0..N-1) or a list of distinct integers")


def _schedule(path: str, node: dict) -> dict:
    _check_keys(path, "schedule", node, SCHEDULE_KEYS)
    if ("epochs" in node) == ("iterations" in node):
        raise _err(path, "schedule", "give exactly one of 'epochs' or 'iterations'")
    for k in ("ims_per_batch", "base_lr"):
        if k not in node:
            raise _err(path, "schedule", f"missing {k!r}")
    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    # key: (test, what it must be); a count is an integer, epochs and the LR any number
    rules = {"iterations": (lambda x: number(x) and x == int(x) and x >= 1, "an integer >= 1"),
             "epochs": (lambda x: number(x) and x > 0, "a number > 0"),
             "train_images": (lambda x: number(x) and x == int(x) and x >= 1, "an integer >= 1"),
             "ims_per_batch": (lambda x: number(x) and x == int(x) and x >= 1, "an integer >= 1"),
             "base_lr": (lambda x: number(x) and x > 0, "a number > 0"),
             "warmup_iters": (lambda x: number(x) and x == int(x) and x >= 0, "an integer >= 0"),
             "checkpoint_period": (lambda x: number(x) and x == int(x) and x >= 1, "an integer >= 1")}
    for k, (ok, what) in rules.items():
        if k in node and not ok(node[k]):
            raise _err(path, f"schedule.{k}", f"must be {what}, got {node[k]!r}")
    steps = node.get("steps", [])
    if not isinstance(steps, list) or any(not number(s) or not 0 < s < 1 for s in steps):
        raise _err(path, "schedule.steps", "must be a list of fractions of the run in (0, 1), e.g. [0.67, 0.89]")
    return dict(node)


def _pairs(path: str, key: str, values) -> list[str]:
    """A KEY VALUE ... list of config overrides (values as strings)."""
    if not isinstance(values, list) or len(values) % 2:
        raise _err(path, key, "must be a list of KEY VALUE pairs (an even number of entries)")
    out = [str(v) for v in values]
    _check_option_keys(path, key, out[0::2])
    return out


def _sensor_failure(path: str, node: dict) -> SensorFailure:
    _check_keys(path, "sensor_failure", node, SENSOR_KEYS)
    arms = node.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise _err(path, "sensor_failure.arms", "must map a detector name to its config file")
    for name, cfg in arms.items():
        if not isinstance(cfg, str) or not os.path.isfile(cfg):
            raise _err(path, f"sensor_failure.arms.{name}", f"no such config file {cfg!r}")
    baseline = str(node.get("baseline", "") or "")
    if baseline and baseline not in arms:
        raise _err(path, "sensor_failure.baseline", f"{baseline!r} is not one of the arms {list(arms)}")
    if "eval" not in node:
        raise _err(path, "sensor_failure.eval", "missing (the test-time conditions, e.g. CADET.TEST.DROP_MODALITIES)")
    return SensorFailure({str(k): v for k, v in arms.items()}, baseline,
                         _pairs(path, "sensor_failure.dropout", node.get("dropout") or []),
                         _pairs(path, "sensor_failure.eval", node["eval"]))


def _slurm(path: str, node: dict) -> dict:
    _check_keys(path, "slurm", node, set(DEFAULT_SLURM))
    out = _merge(DEFAULT_SLURM, node)
    if not isinstance(out["signal_seconds"], int) or isinstance(out["signal_seconds"], bool) or out["signal_seconds"] < 0:
        raise _err(path, "slurm.signal_seconds", f"must be a number of seconds >= 0 (0: no signal), got "
                                                 f"{out['signal_seconds']!r}")
    _bool(path, "slurm.requeue", out["requeue"])
    return out


def load_study(path: str) -> Study:
    """Read and check a study file; an error names the file, the line of the key, and the key."""
    raw, lines = _read_yaml(path)
    try:
        return _parse(path, raw)
    except StudyError as e:
        key = e.key
        while key and key not in lines:  # the closest enclosing key that has a line
            key = key.rpartition(".")[0] if "." in key else key.rpartition("[")[0]
        if not key or not str(e).startswith(f"{path}: "):
            raise
        raise StudyError(f"{path}:{lines[key]}: {str(e)[len(path) + 2:]}", e.key) from None


def _parse(path: str, raw: dict) -> Study:
    _check_keys(path, "(top level)", raw, TOP_KEYS)
    sensor = _sensor_failure(path, raw["sensor_failure"]) if "sensor_failure" in raw else None
    # A study of sensor-failure arms only needs no base config, schedule or baselines: each arm
    # has its config (with its schedule); the base config is then the first arm's.
    sensor_only = sensor is not None and not {"baselines", "fusion_studies", "modality"} & set(raw)
    required = ("name", "output") if sensor_only else ("name", "base_config", "output", "schedule", "baselines")
    for k in required:
        if k not in raw:
            raise _err(path, k, "missing (required)")
    backbone = str(raw.get("backbone", "b1"))
    base = raw.get("baselines") or {}
    _check_keys(path, "baselines", base, {"fusion", "sizes"})
    sizes = [str(s) for s in base.get("sizes", [])]
    studies = [_fusion_study(path, i, n, backbone) for i, n in enumerate(raw.get("fusion_studies") or [])]
    names = [s.name for s in studies]
    if len(set(names)) != len(names) or {"baseline", "modality"} & set(names):
        raise _err(path, "fusion_studies", f"names must be distinct and not 'baseline'/'modality': {names}")
    mod = raw.get("modality") or {}
    _check_keys(path, "modality", mod, {"sets", "fusion", "backbone", "pixel_stats"})
    pixel_stats = _merge(DEFAULT_PIXEL_STATS, mod.get("pixel_stats"))
    mod_sets = [list(s) for s in mod.get("sets", [])]
    for s in mod_sets:
        if not s or any(m not in pixel_stats for m in s) or len(set(s)) != len(s):
            raise _err(path, "modality.sets", f"{s!r}: use distinct names from {sorted(pixel_stats)}")
    opts = [str(o) for o in raw.get("opts") or []]
    if len(opts) % 2:
        raise _err(path, "opts", "must be KEY VALUE pairs (an even number of entries)")
    data = raw.get("data") or {}
    _check_keys(path, "data", data, {"root", "name"})
    report = _merge(DEFAULT_REPORT, raw.get("report"))
    _check_keys(path, "report", report, set(DEFAULT_REPORT))
    for key in ("base_config", "train_script"):
        if raw.get(key) and not os.path.isfile(str(raw[key])):
            raise _err(path, key, f"no such file {raw[key]!r} (relative paths are relative to the folder ablate.py "
                                  f"runs from, here {os.getcwd()})")
    return Study(
        path=path, name=str(raw["name"]),
        base_config=str(raw.get("base_config") or next(iter(sensor.arms.values()))), output=str(raw["output"]),
        seeds=parse_seeds(path, raw.get("seeds", 1)), backbone=backbone, data=data,
        schedule=_schedule(path, raw["schedule"]) if "schedule" in raw else {}, opts=opts,
        env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
        baseline_fusion=str(base.get("fusion", "frm_ffm")), baseline_sizes=sizes, fusion_studies=studies,
        modality_sets=mod_sets, modality_fusion=str(mod.get("fusion", "frm_ffm")),
        modality_backbone=str(mod.get("backbone", backbone)), pixel_stats=pixel_stats, report=report,
        slurm=_slurm(path, raw.get("slurm") or {}),
        train_script=str(raw.get("train_script", "")), raw=raw,
        include_optional=_bool(path, "include_optional", raw.get("include_optional", False)), sensor=sensor,
    )
