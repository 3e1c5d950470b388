"""`ablate.py run` stopped by SIGTERM (preemption, `kill`, `scancel`): the signal reaches the
training, the run is recorded as interrupted, and the runner stops instead of starting the next
run; the rerun resumes it. A stand-in training script, no model."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import yaml

from conftest import make_tiny_root

from cadet_d2.study.rundir import read_status, run_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Stands in for cadet_d2.engine.train: writes started, waits, exits 75 on SIGTERM (the trainer's
# signal hook after its checkpoint), or finishes: model_final.pth, then the metrics.
TRAIN = """\
import json, os, signal, sys, time
out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]
os.makedirs(out, exist_ok=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
open(os.path.join(out, "started"), "a").write("x")
if os.path.exists(os.path.join(out, "..", "..", "hold")):
    time.sleep(60)
open(os.path.join(out, "model_final.pth"), "wb").close()
json.dump({"datasets": {"synth_test": {"AP": 1.0}}, "weights": ""}, open(os.path.join(out, "eval_metrics.json"), "w"))
"""


def write_study(tmp_path, name: str, seeds: int, **extra) -> tuple:
    """A one-baseline study (FRM+FFM, b0, 4 iterations) on a tiny root: (study file, output folder).
    Its ``train_script`` is the stand-in :data:`TRAIN`; ``extra`` adds keys (``slurm``)."""
    root = make_tiny_root(str(tmp_path / "data"))
    out = tmp_path / "out"
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": name, "base_config": os.path.join(REPO, "configs", "Base-CADET.yaml"), "output": str(out),
        "seeds": seeds, "backbone": "b0", "data": {"root": root, "name": "synth"},
        "schedule": {"iterations": 4, "ims_per_batch": 2, "base_lr": 0.01}, "opts": ["MODEL.DEVICE", "cpu"],
        "baselines": {"fusion": "frm_ffm", "sizes": ["b0"]}, "train_script": str(script), **extra}))
    return study, out


def test_sigterm_stops_the_runner_and_the_rerun_resumes(tmp_path):
    study, out = write_study(tmp_path, "sig", 2)
    out.mkdir()
    (out / "hold").write_text("")
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [sys.executable, os.path.join(REPO, "tools", "ablate.py"), "run", str(study)]
    first, second = out / "baseline_frm_ffm_mit_b0" / "seed0", out / "baseline_frm_ffm_mit_b0" / "seed1"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        deadline = time.time() + 120
        while not (first / "started").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        text = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 75, text
    assert "interrupted (interrupted by SIGTERM (exit code 75)), its checkpoint kept; stopping" in text, text
    assert "stopped by a signal (interrupted)" in text.splitlines()[-1], text
    assert read_status(str(first))["state"] == "interrupted"
    assert not second.exists(), "the runner went on to the next run after SIGTERM"

    (out / "hold").unlink()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    status = read_status(str(first))
    assert status["state"] == "done" and [a["exit_code"] for a in status["attempts"]] == [75, 0]
    assert read_status(str(second))["state"] == "done"


def test_ctrl_c_records_the_run_as_interrupted_without_a_traceback(tmp_path):
    """SIGINT (Ctrl-C) to `ablate.py run`: passed on to the training, the run recorded as
    interrupted by SIGINT, a one-line message and exit 130, no traceback."""
    study, out = write_study(tmp_path, "int", 1)
    out.mkdir()
    (out / "hold").write_text("")
    run_dir = out / "baseline_frm_ffm_mit_b0" / "seed0"
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "ablate.py"), "run", str(study)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        deadline = time.time() + 120
        while not (run_dir / "started").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().endswith("interrupted (Ctrl-C): run the same command again to resume"), err
    status = read_status(str(run_dir))
    assert status["state"] == "interrupted" and status["error"].startswith("interrupted by SIGINT"), status


def test_slurm_setup_line_runs_before_set_u(tmp_path):
    """The `slurm.setup` line may read unset variables (Lmod's `module`, conda's `activate` do):
    the task script runs it before `set -u`, and is strict (`set -u`) after it."""
    from cadet_d2.study.cli import main

    marker = tmp_path / "setup.txt"
    study, out = write_study(tmp_path, "setup", 1,
                             slurm={"gpus": 0, "setup": f'echo "setup${{CADET_TEST_NEVER_SET}}" > {marker}'})
    assert main(["run", str(study), "--slurm"]) == 0
    (folder,) = (out / "slurm").iterdir()
    (folder / "tasks.txt").write_text("true\n")  # the task's command: nothing to train here
    env = {k: v for k, v in os.environ.items() if k != "CADET_TEST_NEVER_SET"}
    r = subprocess.run(["bash", str(folder / "array.sbatch")], env={**env, "SLURM_ARRAY_TASK_ID": "0"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and marker.read_text() == "setup\n", r.stderr
    r = subprocess.run(["bash", str(folder / "array.sbatch")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SLURM_ARRAY_TASK_ID: unbound variable" in r.stderr, r.stderr


def test_sigkill_of_the_runner_leaves_a_consistent_status(tmp_path):
    """SIGKILL to `ablate.py run` (no handler runs): its training dies with it (PR_SET_PDEATHSIG),
    the rerun trains the run again, and the status file then closes the lost attempt."""
    study, out = write_study(tmp_path, "kill", 1)
    out.mkdir()
    (out / "hold").write_text("")
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [sys.executable, os.path.join(REPO, "tools", "ablate.py"), "run", str(study)]
    run_dir = out / "baseline_frm_ffm_mit_b0" / "seed0"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    try:
        deadline = time.time() + 120
        while not (run_dir / "started").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        child = read_status(str(run_dir))["child_pid"]
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    deadline = time.time() + 30
    while os.path.exists(f"/proc/{child}") and time.time() < deadline:  # gone with its parent
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
    assert read_status(str(run_dir))["state"] == "running"  # what the killed runner left
    assert run_state(str(run_dir)) == "lost"  # its runner, on this host, is gone: plan says so

    (out / "hold").unlink()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    status = read_status(str(run_dir))
    lost, last = status["attempts"]
    assert status["state"] == "done" and last["exit_code"] == 0 and "start_time" not in lost
    assert lost["ended"] is None and lost["exit_code"] is None and "runner was killed" in lost["lost"]
