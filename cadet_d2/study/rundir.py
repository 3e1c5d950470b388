"""What a run folder says about its run: finished or not, its metrics, its status file.

A run folder is ``<study output>/<arm>/seed<k>`` (Detectron2's OUTPUT_DIR for that run). A run
is *finished* when its metrics file (``CADET.TEST.METRICS_FILE``, ``eval_metrics.json``) is the
final evaluation of ``model_final.pth``: it parses as ``{"datasets": ...}``, ``model_final.pth``
exists and the metrics are not older than it, and ``weights`` names ``model_final.pth`` or lies
outside the folder (the trainer records ``model_final.pth`` after training, ``model_<iteration>.pth`` during it;
files of older versions: ``cfg.MODEL.WEIGHTS``, empty or the initial weights); an evaluation of an
intermediate checkpoint of the folder does not count.
A finished run stays finished when its checkpoints are deleted to free disk: without
``model_final.pth`` the status file must say ``done`` (written by ``ablate run`` once it saw the
run finished), and the metrics' ``weights`` rule still applies.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

from ..utils.io import atomic_write_json

STATUS_FILE = "status.json"
METRICS_FILE = "eval_metrics.json"  # CADET.TEST.METRICS_FILE's default
FINAL = "model_final.pth"


def read_json(path: str) -> Optional[Any]:
    """The JSON object in ``path``, or None when absent or not one JSON document."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_metrics(run_dir: str, metrics_file: str = METRICS_FILE) -> Optional[dict]:
    """``{dataset: {metric: value}}`` of a finished run, else None."""
    m = read_json(os.path.join(run_dir, metrics_file))
    if not isinstance(m, dict) or not isinstance(m.get("datasets"), dict):
        return None
    final = os.path.join(run_dir, FINAL)
    if os.path.isfile(final):
        if os.path.getmtime(os.path.join(run_dir, metrics_file)) + 1e-3 < os.path.getmtime(final):
            return None  # written before the final checkpoint: not its evaluation
    elif read_status(run_dir).get("state") != "done":
        return None  # no final checkpoint, and no runner saw this run finish
    weights = str(m.get("weights") or "")
    if weights and os.path.basename(weights) != FINAL and \
            os.path.dirname(os.path.abspath(weights)) == os.path.abspath(run_dir):
        return None  # an evaluation of an intermediate checkpoint of this run
    return m["datasets"]


def is_finished(run_dir: str, metrics_file: str = METRICS_FILE) -> bool:
    return read_metrics(run_dir, metrics_file) is not None


_RUN_FLAGS = ("--resume", "--eval-only")
# Overrides that do not change a run's numbers: its folder (so that a study output moved or
# copied elsewhere keeps its runs) and how many periodic checkpoints it keeps on disk.
_NOT_RESULTS = ("OUTPUT_DIR", "CADET.CHECKPOINT.KEEP_LAST")


def training_args(command: list[str]) -> list[str]:
    """What makes a run's numbers, from its command line (recorded in ``status.json`` or planned):
    the command without the interpreter, the resume/eval-only flags, eval-only's trailing
    ``MODEL.WEIGHTS <run>/model_final.pth``, and the overrides of :data:`_NOT_RESULTS` with
    their values."""
    args = [t for t in command[1:] if t not in _RUN_FLAGS]
    if "--eval-only" in command and len(args) >= 2 and args[-2] == "MODEL.WEIGHTS":
        args = args[:-2]
    for key in _NOT_RESULTS:
        while key in args:
            i = args.index(key)
            args = args[:i] + args[i + 2:]
    return args


def args_diff(recorded: list[str], planned: list[str]) -> str:
    """The arguments in one :func:`training_args` list and not the other, for messages."""
    extra = [t for t in recorded if t not in planned]
    missing = [t for t in planned if t not in recorded]
    return f"recorded but not planned {extra}, planned but not recorded {missing}"


def read_status(run_dir: str) -> dict:
    """The status file written by ``ablate run`` (empty dict when absent)."""
    s = read_json(os.path.join(run_dir, STATUS_FILE))
    return s if isinstance(s, dict) else {}


def write_status(run_dir: str, status: dict) -> None:
    atomic_write_json(os.path.join(run_dir, STATUS_FILE), status)


def runner_alive(status: dict) -> bool:
    """Whether the ``ablate`` process that wrote ``status`` (its ``pid`` on ``host``) may still
    run: False only when that host is this one and no process has that pid."""
    pid = status.get("pid")
    if status.get("host") != os.uname().nodename or not isinstance(pid, int):
        return True  # another node (SLURM): not visible from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(run_dir: str, metrics_file: str = METRICS_FILE) -> str:
    """``done`` (finished), ``failed`` (last attempt failed), ``partial`` (a checkpoint, not
    finished), ``running`` (status says so, and its runner may be alive: :func:`runner_alive`),
    ``lost`` (status says running, but its runner on this host is gone; the next ``run`` trains
    it again) or ``todo``."""
    if is_finished(run_dir, metrics_file):
        return "done"
    status = read_status(run_dir)
    state = status.get("state")
    if state == "failed":
        return "failed"
    if last_checkpoint(run_dir):
        return "partial"
    if state == "running":
        return "running" if runner_alive(status) else "lost"
    return "todo"


def last_checkpoint(run_dir: str) -> Optional[str]:
    """Path of the checkpoint named by Detectron2's ``last_checkpoint`` file, if it exists."""
    try:
        with open(os.path.join(run_dir, "last_checkpoint"), encoding="utf-8") as f:
            name = f.read().strip()
    except OSError:
        return None
    path = os.path.join(run_dir, name)
    return path if name and os.path.isfile(path) else None


def checkpoint_iteration(path: Optional[str], max_iter: int) -> int:
    """Iterations already trained according to a checkpoint's name (``model_0001999.pth`` -> 2000)."""
    if not path:
        return 0
    if os.path.basename(path) == FINAL:
        return max_iter
    m = re.search(r"model_(\d+)\.pth$", path)
    return int(m.group(1)) + 1 if m else 0


def training_speed(run_dir: str) -> Optional[tuple[int, float]]:
    """(iterations, seconds) summed over Detectron2's "Overall training speed" log lines."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    its, secs = 0, 0.0
    pat = re.compile(r"Overall training speed: (\d+) iterations in (?:(\d+) days?, )?(\d+):(\d+):(\d+)(?:\.\d+)? "
                     r"\(([\d.]+) s / it\)")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = pat.search(line)
            if m:
                n = int(m.group(1))
                its += n
                secs += n * float(m.group(6))
    return (its, secs) if its else None


def peak_gpu_mb(run_dir: str) -> Optional[float]:
    """Largest ``max_mem: NM`` Detectron2 logged (CUDA runs only)."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    best = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for m in re.finditer(r"max_mem: (\d+)M", line):
                best = max(best or 0.0, float(m.group(1)))
    return best


def read_conditions(run_dir: str, metrics_file: str = METRICS_FILE) -> Optional[list[dict]]:
    """The ``conditions`` of a finished run's metrics (``[{name, datasets}]``: clean, then each
    test-time condition), or None (not finished, or evaluated without conditions)."""
    if not is_finished(run_dir, metrics_file):
        return None
    conds = (read_json(os.path.join(run_dir, metrics_file)) or {}).get("conditions")
    return conds if isinstance(conds, list) else None
