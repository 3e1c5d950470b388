"""The study's SLURM path against a real single-node SLURM (Debian's slurmctld, slurmd, munge),
started by this test as root in a temp folder with its own slurm.conf (SLURM_CONF), munge key and
socket: ``tools/ablate.py run <study> --slurm --submit`` of a tiny study (MiT-b0, 64 px, 4
iterations, 4 runs) runs the phase-1 array, the follow-up job and phase 2; a task cancelled
after its first checkpoint is resubmitted by the follow-up job and resumes from it; every run
finishes; the report is written. A plain batch script (docs/reliability.md) signalled with
``scancel --signal=USR1 --batch`` checkpoints, requeues its job, and the requeued job finishes
the run. Also: a refused ``sbatch`` ends with SLURM's message and the ``slurm:`` key to change
(a fake sbatch, always run).

Outside CI, where SLURM cannot be started (not root, packages not installable), the real-SLURM
test skips with the reason; with ``CI=true`` it fails instead. The daemons it started are
stopped by their process ids; /etc/slurm is not touched. docs/study.md describes the setup.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from conftest import make_tiny_root

from cadet_d2.study import load_study, make_plan
from cadet_d2.study.rundir import last_checkpoint, read_status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH_SMALL = os.path.join(REPO, "configs", "studies", "synth_small.yaml")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DEADLINE_S = 420  # the whole study on SLURM (see the timing the test prints)


def _unavailable(reason: str):
    """Skip, or fail under CI (CI=true), where the real SLURM must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but SLURM cannot be started: {reason}")
    pytest.skip(reason)


def _ensure_packages() -> None:
    if all(shutil.which(x) for x in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        _unavailable("SLURM is not installed and this is not root with apt-get (install " + " ".join(PACKAGES) + ")")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if r.returncode:
            _unavailable(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout)[-1500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """This host as slurmd sees it (``slurmd -C``: NodeName, CPUs, sockets, cores, RealMemory)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60).stdout
    line = next((x for x in out.splitlines() if x.startswith("NodeName=")), "")
    if not line:
        _unavailable(f"slurmd -C gave no NodeName line: {out!r}")
    return line


class Cluster:
    """munged, slurmctld and slurmd in the foreground (their pids are ours), configured in ``root``."""

    def __init__(self, root: str):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.conf = os.path.join(root, "slurm.conf")
        self.env = {**os.environ, "SLURM_CONF": self.conf}

    def log(self, name: str, n: int = 40) -> str:
        try:
            with open(os.path.join(self.root, name), encoding="utf-8", errors="replace") as f:
                return f"--- {name} ---\n" + "".join(f.readlines()[-n:])
        except OSError:
            return f"--- {name}: none ---"

    def logs(self) -> str:
        return "\n".join(self.log(n) for n in ("munged.log", "slurmctld.log", "slurmd.log"))

    def start(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge"):
            os.makedirs(os.path.join(r, d), mode=0o700, exist_ok=True)
        key = os.path.join(r, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        sock = os.path.join(r, "munge", "munge.socket")
        self._spawn(["munged", "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={r}/munge/munged.pid", f"--seed-file={r}/munge/munge.seed",
                     f"--log-file={r}/munged.log"])
        self._wait(lambda: os.path.exists(sock), 20, "munged's socket")
        node = _node_line()
        host = node.split()[0].split("=", 1)[1]
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write("\n".join([
                "ClusterName=cadetci", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
                f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
                f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
                f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
                f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd.log",
                "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
                "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
                "ReturnToService=2", "KillWait=5", "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none", "SchedulerParameters=sched_interval=2",
                f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
                "PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        with open(os.path.join(r, "cgroup.conf"), "w", encoding="utf-8") as f:  # read beside slurm.conf
            f.write("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")
        self._spawn(["slurmctld", "-D", "-c", "-i", "-f", self.conf])
        self._spawn(["slurmd", "-D", "-f", self.conf])

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env).stdout
            return "idle" in out

        self._wait(idle, 60, "the node to be idle")

    def _spawn(self, cmd: list[str]) -> None:
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _wait(self, ok, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while not ok():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.time() > end:
                pytest.fail(f"SLURM did not start ({what}; exited: {dead})\n{self.logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.procs and shutil.which("scancel"):
            subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, timeout=30)
        for p in reversed(self.procs):  # slurmd, slurmctld, munged
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=20)

    def queue(self) -> str:
        return subprocess.run(["squeue", "-h", "-o", "%i %T %j"], capture_output=True, text=True, env=self.env).stdout

    def queued_ids(self) -> set[str]:
        """The ids of the jobs SLURM still lists (pending, running or completing)."""
        return {line.split()[0] for line in self.queue().splitlines() if line.strip()}


@pytest.fixture
def cluster(tmp_path_factory):
    if sys.platform != "linux":
        _unavailable("SLURM needs Linux")
    _ensure_packages()
    if os.geteuid() != 0:
        _unavailable("starting slurmd and munged needs root")
    c = Cluster(str(tmp_path_factory.mktemp("slurm")))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _tiny_slurm_study(tmp_path) -> tuple[str, str, str]:
    """synth_small cut down to 1 seed: baseline + cssa [1] [4] (phase 1), cssa top 1 x tau 0.3
    (phase 2); 4 iterations, a checkpoint every 2; a slurm block for one 2-core node without GPUs."""
    root = make_tiny_root(str(tmp_path / "data"))
    raw = yaml.safe_load(open(SYNTH_SMALL))
    cssa = raw["fusion_studies"][0]
    cssa["phase2"]["grid"]["t"]["values"] = [0.3]
    raw.update(seeds=1, fusion_studies=[cssa], modality={"sets": []}, output=str(tmp_path / "out"),
               schedule={"iterations": 4, "ims_per_batch": 2, "base_lr": 0.01, "warmup_iters": 1, "checkpoint_period": 2},
               report={"sets": {"test": "test"}, "bootstrap": {"set": "test", "resamples": 20}},
               slurm={"gpus": 0, "cpus": 1, "mem": "2G", "parallel": 2, "time": "00:20:00", "signal_seconds": 60})
    path = tmp_path / "tiny_slurm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path), root, raw["output"]


def _ckpt_iter(name: str) -> int:
    """model_0000004.pth -> 4"""
    return int(re.fullmatch(r"model_(\d+)\.pth", name).group(1))


def test_study_on_a_real_slurm(cluster, tmp_path):
    t0 = time.time()
    path, root, out = _tiny_slurm_study(tmp_path)
    opts = ["--opts", "CADET.DATA.ROOT", root]
    study = load_study(path)
    env = {**cluster.env, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "ablate.py"), "run", path, "--slurm", "--submit",
                        *opts], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr + cluster.logs()
    array = re.search(r"submitted array job (\d+) and follow-up job (\d+)", r.stdout)
    assert array, r.stdout
    (folder,) = [os.path.join(out, "slurm", d) for d in os.listdir(os.path.join(out, "slurm"))]
    script = open(os.path.join(folder, "array.sbatch")).read()
    assert "#SBATCH --signal=B:USR1@60" in script and "#SBATCH --requeue" in script and 'eval "exec $LINE"' in script
    assert "--gres" not in script

    plan = make_plan(study, opts[1:])
    assert [r.arm.phase for r in plan.runs] == ["baseline", "1", "1", "2"] and plan.runs[3].arm.pending
    first = plan.runs[0]  # task 0 of the array: cancelled after its first checkpoint, resumed by the follow-up job

    def fail(msg: str):
        jobs = "\n".join(f"--- {f} ---\n" + open(os.path.join(folder, f), errors="replace").read()[-1500:]
                         for f in sorted(os.listdir(folder)) if f.endswith(".out"))
        errs = "\n".join(f"--- {r.key} stderr ---\n" + "".join(open(os.path.join(r.dir, "stderr.log")).readlines()[-15:])
                         for r in make_plan(study, opts[1:]).runs if os.path.isfile(os.path.join(r.dir, "stderr.log")))
        pytest.fail(f"{msg} after {time.time() - t0:.0f}s\nqueue:\n{cluster.queue()}\n{jobs}\n{errs}\n{cluster.logs()}")

    deadline = t0 + DEADLINE_S
    while not (last_checkpoint(first.dir) and read_status(first.dir).get("child_pid")):
        if first.state() == "done" or time.time() > deadline:
            fail(f"{first.key} finished (or timed out) before it could be killed")
        time.sleep(0.05)
    child = read_status(first.dir)["child_pid"]
    os.kill(child, signal.SIGSTOP)  # hold it after the checkpoint (as a preemption would find it), then cancel
    ckpt = os.path.basename(last_checkpoint(first.dir))
    cancel = subprocess.run(["scancel", f"{array.group(1)}_0"], capture_output=True, text=True, env=cluster.env)
    assert cancel.returncode == 0, cancel.stderr

    while True:  # the array, the follow-up job, phase 2's array (with the cancelled run) and its follow-up
        states = [r.state() for r in make_plan(study, opts[1:]).runs]
        if states == ["done"] * 4 and not cluster.queue().strip():
            break
        if time.time() > deadline:
            fail(f"not finished within {DEADLINE_S}s (runs: {states})")
        time.sleep(1)
    t_done = time.time() - t0

    plan = make_plan(study, opts[1:])
    assert plan.runs[3].arm.name in ("cssa_s1_t0.3", "cssa_s4_t0.3")
    walls = {r.key: round(read_status(r.dir)["wall_s"]) for r in plan.runs}
    status = read_status(first.dir)
    assert len(status["attempts"]) == 2, status  # the cancelled attempt, then the resumed one
    # scancel continues the held process and sends SIGTERM: the stop hook may write one more checkpoint
    resumed = status["attempts"][1]["resumed_from"]
    assert _ckpt_iter(resumed) >= _ckpt_iter(ckpt), (resumed, ckpt)
    assert status["attempts"][1]["start_iter"] == _ckpt_iter(resumed) + 1, status
    assert all(len(read_status(r.dir)["attempts"]) == 1 for r in plan.runs[1:])
    folders = sorted(os.listdir(os.path.join(out, "slurm")))
    assert len(folders) == 2  # phase 1's scripts, then the follow-up job's: phase 2 and the cancelled run
    tasks = open(os.path.join(out, "slurm", folders[1], "tasks.txt")).read()
    assert f"--arm {first.arm.name} " in tasks and f"--arm {plan.runs[3].arm.name} " in tasks

    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "ablate.py"), "report", path, "--no-plots", *opts], cwd=REPO, capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    md = open(os.path.join(out, "report", "report.md")).read()
    assert "Runs: 4/4 done, 0 failed" in md and "## cssa phase 2" in md
    assert os.path.isfile(os.path.join(out, "report", "results.csv"))
    print(f"\nreal SLURM study: all 4 runs done after {t_done:.0f}s (training wall s per run {walls}), "
          f"report after {time.time() - t0:.0f}s")


def test_refused_sbatch_says_what_to_change(tmp_path):
    """A fake sbatch that refuses like SLURM does on a node without GPUs: the tool ends with
    SLURM's message, the script and the `slurm:` key to change (exit 2), not a traceback."""
    path, root, out = _tiny_slurm_study(tmp_path)
    raw = yaml.safe_load(open(path))
    raw["slurm"]["gpus"] = 1
    open(path, "w").write(yaml.safe_dump(raw))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid generic resource (gres) "
                    "specification' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": REPO}
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "ablate.py"), "run", path, "--slurm", "--submit",
                        "--opts", "CADET.DATA.ROOT", root], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "slurm error: sbatch refused " in r.stderr and "array.sbatch" in r.stderr
    assert "Invalid generic resource (gres) specification" in r.stderr
    assert f"Change the `slurm:` block of {path}: gpus (e.g. `gpus: 0`" in r.stderr


FAKE_TRAINING = """import os, signal, sys, time
out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]
def stop(signum, frame):
    open(os.path.join(out, "got_signal"), "w").write(signal.Signals(signum).name)
    sys.exit(42)  # what a trainer's signal hook does after its checkpoint: a distinct exit code
signal.signal(signal.SIGUSR1, stop)
open(os.path.join(out, "ready"), "w").close()
time.sleep(120)
"""


def test_array_task_passes_slurms_signal_to_the_training(tmp_path):
    """array.sbatch run by bash as SLURM would (SLURM_ARRAY_TASK_ID=0): SIGUSR1 to the batch
    shell (what --signal=B:USR1@N sends) reaches the training, through the runner that the shell
    exec'd; the run is recorded as interrupted by SIGUSR1 with the training's exit code."""
    path, root, out = _tiny_slurm_study(tmp_path)
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINING)
    raw = yaml.safe_load(open(path))
    raw["train_script"] = str(script)
    open(path, "w").write(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": REPO, "SLURM_ARRAY_TASK_ID": "0"}
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "ablate.py"), "run", path, "--slurm",
                        "--opts", "CADET.DATA.ROOT", root], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (folder,) = [os.path.join(out, "slurm", d) for d in os.listdir(os.path.join(out, "slurm"))]
    run_dir = os.path.join(out, "baseline_frm_ffm_mit_b0", "seed0")  # task 0
    task = subprocess.Popen(["bash", os.path.join(folder, "array.sbatch")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.time() + 120
        while not os.path.exists(os.path.join(run_dir, "ready")):
            assert task.poll() is None and time.time() < end, task.communicate()[0] if task.poll() is not None else "timeout"
            time.sleep(0.1)
        os.kill(task.pid, signal.SIGUSR1)  # the batch shell's pid: the runner, after exec
        output = task.communicate(timeout=60)[0]
    finally:
        if task.poll() is None:
            task.kill()
    assert task.returncode == 1, output
    assert open(os.path.join(run_dir, "got_signal")).read() == "SIGUSR1"
    status = read_status(run_dir)
    assert status["state"] == "interrupted" and status["error"] == "interrupted by SIGUSR1 (exit code 42)", status


def _job_field(cluster, job: str, field: str) -> str | None:
    """``field`` of ``scontrol show job`` (None once SLURM has forgotten the job)."""
    r = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=cluster.env)
    m = re.search(rf"\b{field}=(\S+)", r.stdout)
    return m.group(1) if m else None


def test_usr1_requeues_the_job_and_it_finishes_the_run(cluster, tmp_path):
    """docs/reliability.md's batch script on a real SLURM: ``scancel --signal=USR1 --batch`` (what
    ``--signal=B:USR1@N`` sends before the time limit) after the first checkpoint; the run writes a
    checkpoint and requeues its own job (``scontrol requeue``); the requeued job resumes at the next
    iteration and finishes. SLURM holds a requeued job (BeginTime) before it may start again: the
    test lets it start 2 s after the requeue (``scontrol update StartTime=now``)."""
    from test_resume import _cmd

    root = make_tiny_root(str(tmp_path / "data"))
    out = str(tmp_path / "run")
    cmd = _cmd(root, out, 0, "--resume") + ["SOLVER.MAX_ITER", "24", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]
    script = tmp_path / "train.sbatch"
    script.write_text("\n".join([
        "#!/bin/bash", "#SBATCH --requeue", "#SBATCH --open-mode=append", f"#SBATCH --output={tmp_path}/job.log",
        "#SBATCH --cpus-per-task=1", "#SBATCH --mem=2G", f"cd {REPO}", "export OMP_NUM_THREADS=1",
        "exec " + shlex.join(cmd), ""]))
    env = {**cluster.env, "PYTHONPATH": REPO}
    r = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr + cluster.logs()
    job = r.stdout.strip().split(";")[0]

    def log() -> str:
        path = tmp_path / "job.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(ok, what: str, timeout: float = 240) -> None:
        end = time.time() + timeout
        while not ok():
            state = _job_field(cluster, job, "JobState")
            ended = state in ("FAILED", "COMPLETED", "CANCELLED")
            # The job may end between ``ok()`` and reading its state: ask ``ok()`` once more.
            if ended and ok():
                return
            if ended or time.time() > end:
                why = f"the job ended ({state})" if ended else f"not within {timeout:.0f}s"
                pytest.fail(f"{what}: {why}\nqueue:\n{cluster.queue()}\n{log()[-3000:]}\n{cluster.logs()}")
            time.sleep(0.2)

    t0 = time.time()
    wait(lambda: os.path.exists(os.path.join(out, "model_0000001.pth")), "the first checkpoint")
    t_ckpt = time.time() - t0
    assert not os.path.exists(os.path.join(out, "model_final.pth")), "the run ended before the signal"
    r = subprocess.run(["scancel", "--signal=USR1", "--batch", job], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    wait(lambda: _job_field(cluster, job, "Restarts") == "1", "the requeue")
    requeued_at = time.time()
    t_requeue = requeued_at - t0

    def rerun_done() -> bool:
        # SLURM holds a requeued job until its BeginTime, because slurmd revoked the job's credential
        # and refuses ("Job credential revoked") one created in the same second. So start it now,
        # but no sooner than 2 s after the requeue.
        if _job_field(cluster, job, "JobState") == "PENDING" and time.time() - requeued_at > 2:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, env=env)
            time.sleep(1)
        return os.path.exists(os.path.join(out, "model_final.pth")) and job not in cluster.queued_ids()

    wait(rerun_done, "the rerun")

    text = log()
    m = re.search(r"received SIGUSR1 at iteration (\d+); checkpoint written: (\S+); resume with --resume", text)
    assert m, text[-3000:]
    assert f"SLURM job {job} requeued (scontrol requeue {job})" in text
    starts = [int(x) for x in re.findall(r"Starting training from iteration (\d+)", text)]
    assert starts == [0, int(m.group(1)) + 1], (starts, text[-3000:])
    first, _, rerun = text.partition(f"SLURM job {job} requeued")
    final = os.path.join(out, "model_final.pth")
    assert f"Saving checkpoint to {final}" not in first, first[-3000:]  # the first job stopped early
    assert f"Saving checkpoint to {final}" in rerun, rerun[-3000:]  # the requeued job ran to the end
    print(f"\nrequeue on a real SLURM: first checkpoint after {t_ckpt:.0f}s, requeued after {t_requeue:.0f}s, "
          f"finished after {time.time() - t0:.0f}s")
