"""What a run folder says about its run (cadet_d2/study/rundir.py): the rules that decide whether
``ablate run`` skips, resumes or retrains it, and whether ``report`` counts it."""
from __future__ import annotations

import json
import os

from cadet_d2.study.rundir import FINAL, METRICS_FILE, read_metrics, run_state, write_status

DATASETS = {"synth_test": {"AP": 41.5}}


def _write(run_dir, name: str, data=None) -> str:
    path = os.path.join(run_dir, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data) if data is not None else "")
    return path


def _age(path: str, seconds: float) -> None:
    t = os.path.getmtime(path) - seconds
    os.utime(path, (t, t))


def _finished(run_dir, weights: str = "") -> None:
    """The final checkpoint, then its evaluation, as a training run leaves them."""
    _age(_write(run_dir, FINAL), 10)
    _write(run_dir, METRICS_FILE, {"datasets": DATASETS, "weights": weights})


def test_final_checkpoint_then_its_metrics_is_done(tmp_path):
    _finished(tmp_path)
    assert run_state(str(tmp_path)) == "done" and read_metrics(str(tmp_path)) == DATASETS


def test_metrics_older_than_the_final_checkpoint_are_not_its_evaluation(tmp_path):
    _finished(tmp_path)
    _age(os.path.join(tmp_path, METRICS_FILE), 60)
    assert read_metrics(str(tmp_path)) is None and run_state(str(tmp_path)) == "todo"


def test_an_evaluation_of_an_intermediate_checkpoint_is_not_final(tmp_path):
    _finished(tmp_path, weights=str(tmp_path / "model_0000099.pth"))
    assert run_state(str(tmp_path)) == "todo"
    _finished(tmp_path, weights="/elsewhere/model_0000099.pth")  # initial weights from outside: fine
    assert run_state(str(tmp_path)) == "done"


def test_metrics_that_are_not_a_datasets_object_are_not_finished(tmp_path):
    _finished(tmp_path)
    _write(tmp_path, METRICS_FILE, {"AP": 41.5})
    assert run_state(str(tmp_path)) == "todo"


def test_a_run_seen_done_stays_done_when_its_checkpoints_are_deleted(tmp_path):
    _finished(tmp_path)
    write_status(str(tmp_path), {"state": "done"})
    os.remove(tmp_path / FINAL)
    assert run_state(str(tmp_path)) == "done" and read_metrics(str(tmp_path)) == DATASETS
    _write(tmp_path, METRICS_FILE, {"datasets": DATASETS, "weights": str(tmp_path / "model_0000099.pth")})
    assert run_state(str(tmp_path)) == "todo"  # the weights rule still holds


def test_without_final_checkpoint_only_a_done_status_counts(tmp_path):
    _finished(tmp_path)
    os.remove(tmp_path / FINAL)
    assert run_state(str(tmp_path)) == "todo"  # no status file: nobody saw it finish
    for state in ("running", "interrupted", "failed"):
        write_status(str(tmp_path), {"state": state})
        assert read_metrics(str(tmp_path)) is None, state
    assert run_state(str(tmp_path)) == "failed"


def test_a_running_status_whose_runner_is_gone_is_lost(tmp_path):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no process (reuse within the test is not expected)
    here = os.uname().nodename
    for status, state in [({"pid": os.getpid(), "host": here}, "running"), ({"pid": gone.pid, "host": here}, "lost"),
                          ({"pid": gone.pid, "host": here + "-other-node"}, "running"), ({}, "running")]:
        write_status(str(tmp_path), {"state": "running", **status})
        assert run_state(str(tmp_path)) == state, status
