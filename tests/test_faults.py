"""Faults of long runs: a stop signal checkpoints and exits (and requeues under SLURM), a failed
checkpoint write is explained and loses nothing, a damaged last checkpoint falls back to the
previous one, KEEP_LAST bounds the files, and the preflight's size estimate matches real files."""
from __future__ import annotations

import errno
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
import types

import pytest
import torch
from detectron2.config import CfgNode

from cadet_d2.config import add_cadet_config
from cadet_d2.engine.checkpoint import CadetCheckpointer, CheckpointWriteError, NoLoadableCheckpointError, RNGState
from cadet_d2.engine.preflight import PreflightError, check_room_for_checkpoints, checkpoint_size
from cadet_d2.engine.setup import load_config
from cadet_d2.engine.signals import EXIT_STOPPED, StopOnSignal, StopTraining, requeue_slurm_job
from cadet_d2.utils.io import atomic_write
from test_resume import ENV, MAX_ITER, REPO, _assert_identical, _cmd, _final_state, _run, data_root  # noqa: F401


def _model(width: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 4))


def _ckpt(folder, model=None, **kw) -> CadetCheckpointer:
    return CadetCheckpointer(model or _model(), str(folder), save_to_disk=True, **kw)


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ---- failed writes ------------------------------------------------------------------------------
class _DiskFullAfter(CadetCheckpointer):
    """Writes part of the file, then fails as a full disk does."""

    def write_file(self, data, path):
        def write(f):
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        atomic_write(path, write)


def _assert_nothing_lost(folder, last: str, model: torch.nn.Module) -> None:
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")], _files(folder)
    with open(os.path.join(folder, "last_checkpoint")) as f:
        assert f.read() == last
    state = torch.load(os.path.join(folder, last), weights_only=True)
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())


def test_disk_full_write_gives_one_message_and_keeps_last_checkpoint(tmp_path):
    model = _model()
    _ckpt(tmp_path, model).save("model_0000001", iteration=1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(CheckpointWriteError) as e:
        _DiskFullAfter(model, str(tmp_path), save_to_disk=True).save("model_0000003", iteration=3)
    msg = str(e.value)
    assert "the disk is full (No space left on device)" in msg
    assert f"while writing {tmp_path}/model_0000003.pth" in msg
    assert re.search(r"needs about \d+\.\d KiB .* [\d.]+ [KMGT]iB free there", msg), msg
    assert f"the last good checkpoint, {tmp_path}/model_0000001.pth, is intact" in msg
    assert "--resume" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one message, not a chain
    assert not os.path.exists(tmp_path / "model_0000003.pth")
    model.load_state_dict(saved)
    _assert_nothing_lost(tmp_path, "model_0000001.pth", model)


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(r.stderr or r.stdout).strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_on_a_real_small_filesystem(small_fs):
    model = _model(400)  # ~630 KiB of weights: the 2 MiB disk holds 3 checkpoints
    ckpt = _ckpt(small_fs, model)
    saved = []
    with pytest.raises(CheckpointWriteError) as e:
        for it in range(1, 8):
            ckpt.save(f"model_{it:07d}", iteration=it)
            saved.append(f"model_{it:07d}.pth")
    assert len(saved) >= 2, "the disk should hold at least two checkpoints"
    msg = str(e.value)
    assert "the disk is full" in msg and f"the last good checkpoint, {small_fs}/{saved[-1]}, is intact" in msg
    assert re.search(r"needs about 6\d\d\.\d KiB", msg), msg
    _assert_nothing_lost(small_fs, saved[-1], model)


# ---- resume from damaged checkpoints -------------------------------------------------------------
def _two_checkpoints(folder) -> tuple[torch.nn.Module, dict]:
    model = _model()
    ckpt = _ckpt(folder, model, rng=RNGState())
    ckpt.save("model_0000001", iteration=1)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ckpt.save("model_0000003", iteration=3)
    return model, first


def _truncate(path) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_truncated_last_checkpoint_resumes_from_the_previous_one(tmp_path, caplog):
    _, first = _two_checkpoints(tmp_path)
    _truncate(tmp_path / "model_0000003.pth")
    fresh = _model(64)
    with torch.no_grad():
        fresh[0].weight.zero_()
    with caplog.at_level(logging.WARNING):
        extra = _ckpt(tmp_path, fresh, rng=RNGState()).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in first.items())
    text = caplog.text
    assert f"cannot resume from {tmp_path}/model_0000003.pth: corrupt or truncated checkpoint" in text
    assert "trying the previous checkpoint" in text
    assert f"resuming from {tmp_path}/model_0000001.pth (iteration 1; training continues at iteration 2)" in text


def test_missing_last_checkpoint_record_resumes_from_the_newest_file(tmp_path, caplog):
    model, _ = _two_checkpoints(tmp_path)
    os.remove(tmp_path / "last_checkpoint")  # killed between the rename of the file and its record
    fresh = _model(64)
    ckpt = _ckpt(tmp_path, fresh, rng=RNGState())
    assert ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == f"{tmp_path}/model_0000003.pth"
    with caplog.at_level(logging.WARNING):
        assert ckpt.resume_or_load("", resume=True)["iteration"] == 3
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    assert f"{tmp_path}/last_checkpoint is missing" in caplog.text
    assert not _ckpt(tmp_path / "empty").has_checkpoint()


def test_no_loadable_checkpoint_lists_the_files_tried(tmp_path):
    _two_checkpoints(tmp_path)
    _truncate(tmp_path / "model_0000003.pth")
    (tmp_path / "model_0000001.pth").write_bytes(b"")
    with pytest.raises(NoLoadableCheckpointError) as e:
        _ckpt(tmp_path).resume_or_load("", resume=True)
    msg = str(e.value)
    assert f"no checkpoint in {tmp_path} loads; tried, newest first:" in msg
    lines = msg.splitlines()
    assert lines[1].startswith(f"  {tmp_path}/model_0000003.pth: corrupt or truncated"), msg
    assert lines[2].startswith(f"  {tmp_path}/model_0000001.pth: corrupt or truncated"), msg


# ---- KEEP_LAST ------------------------------------------------------------------------------------
def test_keep_last_keeps_the_newest_periodic_checkpoints(tmp_path):
    ckpt = _ckpt(tmp_path, keep_last=2)
    for it in (1, 3, 5, 7, 9):
        ckpt.save(f"model_{it:07d}", iteration=it)
    ckpt.save("model_final", iteration=9)
    assert _files(tmp_path) == ["last_checkpoint", "model_0000007.pth", "model_0000009.pth", "model_final.pth"]
    keep_all = _ckpt(tmp_path / "all")
    for it in (1, 3, 5):
        keep_all.save(f"model_{it:07d}", iteration=it)
    assert len(_files(tmp_path / "all")) == 4


def test_bad_checkpoint_keys_are_refused():
    base = os.path.join(REPO, "configs", "Base-CADET.yaml")
    with pytest.raises(ValueError, match="KEEP_LAST must be >= 0"):
        load_config(base, ["CADET.CHECKPOINT.KEEP_LAST", "-1"])
    with pytest.raises(ValueError, match="SIGHUP is not in CADET.CHECKPOINT.STOP_SIGNALS"):
        load_config(base, ["CADET.CHECKPOINT.REQUEUE_SIGNALS", "['SIGHUP']"])
    with pytest.raises(ValueError, match="'SIGKILL' is not a signal that can be caught"):
        load_config(base, ["CADET.CHECKPOINT.STOP_SIGNALS", "['SIGKILL']"])


# ---- preflight --------------------------------------------------------------------------------------
def _base_cfg() -> CfgNode:
    from detectron2.config import get_cfg
    return get_cfg()


def _sized_run(tmp_path, optimizer: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.BatchNorm2d(64), torch.nn.Conv2d(64, 64, 3),
                                torch.nn.Flatten(), torch.nn.LazyLinear(8))
    model(torch.zeros(1, 3, 12, 12))  # materialise the lazy layer
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=0.01, momentum=0.9) if optimizer == "SGD"
           else torch.optim.AdamW(params, lr=1e-3))
    ckpt = _ckpt(tmp_path / optimizer, model, optimizer=opt, rng=RNGState())
    size = checkpoint_size(ckpt, opt)  # before the first step: no optimizer state yet
    assert not opt.state_dict()["state"]
    model(torch.randn(2, 3, 12, 12)).sum().backward()
    opt.step()
    ckpt.save("model_0000000", iteration=0)
    return size, os.path.getsize(tmp_path / optimizer / "model_0000000.pth")


@pytest.mark.parametrize("optimizer, moments", [("SGD", 1), ("AdamW", 2)])
def test_preflight_checkpoint_size_matches_the_real_file(tmp_path, optimizer, moments):
    size, real = _sized_run(tmp_path, optimizer)
    assert abs(size.total - real) <= 0.10 * real, (size, real)
    assert size.total / size.weights == pytest.approx(1 + moments, rel=0.10)


def test_preflight_names_checkpoint_and_transient_sizes(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    model = _model(256)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = _ckpt(tmp_path, model, optimizer=opt)
    cfg = add_cadet_config(_base_cfg())
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.CADET.CHECKPOINT.KEEP_LAST = 1000, 100, 3
    need = check_room_for_checkpoints(cfg, ckpt, opt)
    one = checkpoint_size(ckpt, opt).total
    assert need == (3 + 1) * one + one  # 3 periodic + model_final + the transient copy
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - need + 1, need - 1))
    with pytest.raises(PreflightError) as e:
        check_room_for_checkpoints(cfg, ckpt, opt)
    msg = str(e.value)
    assert "3 periodic checkpoint(s) kept (CADET.CHECKPOINT.KEEP_LAST 3) and model_final.pth" in msg
    sizes = r"[\d.]+ KiB \([\d.]+ KiB of weights, [\d.]+ KiB of optimizer state, [\d.]+ KiB other\) each"
    assert re.search(sizes, msg), msg
    assert "plus the transient copy of" in msg and "CADET.CHECKPOINT.KEEP_LAST" in msg


# ---- the signal hook, in process --------------------------------------------------------------------
class _SignalDuringSave(CadetCheckpointer):
    """Receives a second SIGTERM in the middle of writing the checkpoint."""

    def write_file(self, data, path):
        def write(f):
            f.write(b"")
            os.kill(os.getpid(), signal.SIGTERM)
            torch.save(data, f)
        atomic_write(path, write)


def _hooked(folder, checkpointer_cls=CadetCheckpointer, **kw) -> tuple[StopOnSignal, types.SimpleNamespace]:
    model = _model()
    trainer = types.SimpleNamespace(iter=4, max_iter=10,
                                    checkpointer=checkpointer_cls(model, str(folder), save_to_disk=True))
    hook = StopOnSignal(**kw)
    hook.trainer = trainer
    return hook, trainer


def test_second_signal_during_the_save_does_not_corrupt_it(tmp_path, caplog):
    hook, trainer = _hooked(tmp_path, _SignalDuringSave)
    before = signal.getsignal(signal.SIGTERM)
    hook.before_train()
    try:
        hook.after_step()  # nothing received: nothing happens
        assert _files(tmp_path) == []
        os.kill(os.getpid(), signal.SIGTERM)
        with caplog.at_level(logging.INFO), pytest.raises(StopTraining) as e:
            hook.after_step()
    finally:
        hook.after_train()
    assert signal.getsignal(signal.SIGTERM) is before
    assert e.value.code == EXIT_STOPPED == 75
    path = f"{tmp_path}/model_0000004.pth"
    assert e.value.message == (f"[cadet] received SIGTERM at iteration 4; checkpoint written: {path}; resume with "
                               "--resume (the resumed run starts at iteration 5)")
    assert "received SIGTERM while the checkpoint is written: ignored, the save finishes" in caplog.text
    state = torch.load(path, weights_only=True)
    assert state["iteration"] == 4
    assert all(torch.equal(state["model"][k], v) for k, v in trainer.checkpointer.model.state_dict().items())


def test_signal_at_the_last_iteration_lets_the_run_finish(tmp_path):
    hook, trainer = _hooked(tmp_path)
    trainer.iter = trainer.max_iter - 1
    hook.before_train()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        hook.after_step()  # no StopTraining
    finally:
        hook.after_train()
    assert _files(tmp_path) == []


# ---- SLURM requeue with a fake scontrol -----------------------------------------------------------
@pytest.fixture
def fake_scontrol(tmp_path):
    """A ``scontrol`` on PATH that appends its arguments to a file; returns (env, that file)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "scontrol_calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, record


@pytest.mark.parametrize("sig, job_env, expected", [
    (signal.SIGUSR1, {"SLURM_JOB_ID": "4242"}, "requeue 4242\n"),
    (signal.SIGUSR1, {"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4200", "SLURM_ARRAY_TASK_ID": "3"},
     "requeue 4200_3\n"),
    (signal.SIGTERM, {"SLURM_JOB_ID": "4242"}, None),  # not in REQUEUE_SIGNALS: scancel must not requeue
    (signal.SIGUSR1, {}, None),  # not under SLURM
])
def test_requeue_under_slurm(tmp_path, fake_scontrol, caplog, sig, job_env, expected):
    env, record = fake_scontrol
    hook, _ = _hooked(tmp_path / "out", env={**env, **job_env})
    hook.before_train()
    try:
        os.kill(os.getpid(), sig)
        with caplog.at_level(logging.WARNING), pytest.raises(StopTraining):
            hook.after_step()
    finally:
        hook.after_train()
    assert os.path.isfile(tmp_path / "out" / "model_0000004.pth")  # saved before the requeue
    if expected is None:
        assert not record.exists()
    else:
        assert record.read_text() == expected
        assert f"SLURM job {expected.split()[1]} requeued" in caplog.text


def test_requeue_failure_is_reported_not_raised(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'Job is not requeueable' >&2\nexit 1\n")
    (bin_dir / "scontrol").chmod(0o755)
    msg = requeue_slurm_job({"SLURM_JOB_ID": "7", "PATH": str(bin_dir)})
    assert msg == "not requeued: scontrol requeue 7 exited 1: Job is not requeueable"
    assert "scontrol is not on PATH" in requeue_slurm_job({"SLURM_JOB_ID": "7", "PATH": str(tmp_path / "none")})


# ---- end to end: SIGTERM a tools/train_net.py run, then --resume ---------------------------------
# A periodic checkpoint at iteration 3 only (and no evaluation, for speed): the stop comes after it.
E2E_OPTS = ["SOLVER.CHECKPOINT_PERIOD", "4", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]


def _run_and_signal(cmd: list[str], out: str, after: str = "model_0000003.pth") -> tuple[int, str]:
    """Start a run in its own process group, send SIGTERM to the whole group (main process and
    data-loader workers, as ``scancel`` does) once checkpoint ``after`` exists; wait for the end."""
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "signalled_run.log")
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 240
            while p.poll() is None and not os.path.exists(os.path.join(out, after)):
                assert time.time() < deadline, f"{after} not written within 240 s"
                time.sleep(0.005)
            os.killpg(p.pid, signal.SIGTERM)
            rc = p.wait(timeout=240)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    with open(log_path) as f:
        return rc, f.read()


def test_sigterm_then_resume_gives_identical_weights_losing_no_iteration(data_root, tmp_path):  # noqa: F811
    ref = str(tmp_path / "uninterrupted")
    _run(_cmd(data_root, ref, 0) + E2E_OPTS)
    out = str(tmp_path / "signalled")
    rc, log = _run_and_signal(_cmd(data_root, out, 2) + E2E_OPTS, out)
    assert rc == EXIT_STOPPED, log[-3000:]
    m = re.search(r"received SIGTERM at iteration (\d+); checkpoint written: (\S+); resume with --resume", log)
    assert m, log[-3000:]
    stopped = int(m.group(1))
    assert 3 < stopped < MAX_ITER - 1, f"stopped at {stopped}"
    assert m.group(2) == os.path.join(out, f"model_{stopped:07d}.pth")
    assert log.count("received SIGTERM: stopping after the current iteration") == 1  # workers stay quiet
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    resumed_log = _run(_cmd(data_root, out, 0, "--resume") + E2E_OPTS)
    start = int(re.search(r"Starting training from iteration (\d+)", resumed_log).group(1))
    assert start == stopped + 1  # no iteration lost, none repeated
    _assert_identical(_final_state(ref), _final_state(out))


def test_sigterm_with_detectron2s_loader_checkpoints_and_exits_75(data_root, tmp_path):  # noqa: F811
    """Detectron2's own train loader (2 workers) under a SIGTERM to the whole process group: its
    workers survive (cadet_d2/data/workers.py), the run checkpoints and exits 75."""
    out = str(tmp_path / "signalled")
    opts = E2E_OPTS + ["CADET.DATA.DETERMINISTIC_STREAM", "False"]
    rc, log = _run_and_signal(_cmd(data_root, out, 2) + opts, out)
    assert rc == EXIT_STOPPED, log[-3000:]
    m = re.search(r"received SIGTERM at iteration (\d+); checkpoint written: (\S+);", log)
    assert m and os.path.isfile(m.group(2)), log[-3000:]
    assert "DataLoader worker" not in log


def test_sigterm_under_torchrun_checkpoints_and_resumes(data_root, tmp_path):  # noqa: F811
    """2 CPU processes under torchrun, SIGTERM to the whole process group: torchrun passes it on,
    both ranks stop at the same iteration with one checkpoint, torchrun itself exits 1 (its
    SignalException; the workers exit 75); torchrun with --resume continues at the next iteration."""
    out = str(tmp_path / "torchrun")
    args = _cmd(data_root, out, 0)[1:] + E2E_OPTS + ["SOLVER.MAX_ITER", "16"]
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    rc, log = _run_and_signal(head + args, out)
    assert rc == 1, log[-3000:]
    m = re.search(r"received SIGTERM at iteration (\d+); checkpoint written: (\S+);", log)
    assert m and os.path.isfile(m.group(2)), log[-3000:]
    stopped = int(m.group(1))
    r = subprocess.run(head + args[:3] + ["--resume"] + args[3:], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert int(re.search(r"Starting training from iteration (\d+)", r.stdout + r.stderr).group(1)) == stopped + 1
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


# ---- resuming a plain-Detectron2 checkpoint -------------------------------------------------------
def test_resuming_a_plain_detectron2_checkpoint_warns_for_each_missing_state(tiny_root, tmp_path, caplog):
    from cadet_d2.engine.trainer import CadetTrainer
    from conftest import registered_cfg

    out = str(tmp_path / "out")
    fast = ["CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum", "MODEL.FPN.OUT_CHANNELS", "32",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "DATASETS.TEST", "()"]
    trainer = CadetTrainer(registered_cfg(tiny_root, out, *fast))
    # what Detectron2's DefaultTrainer writes: weights, iteration and scheduler; no optimizer, RNG or stream
    plain = {"model": trainer.checkpointer.model.state_dict(), "trainer": {"iteration": 5, "hooks": {}},
             "iteration": 5}
    torch.save(plain, os.path.join(out, "model_0000005.pth"))
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000005.pth")
    with caplog.at_level(logging.INFO):
        trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 6
    assert "the checkpoint has no optimizer state (written by plain Detectron2?)" in caplog.text
    assert "the checkpoint has no RNG state" in caplog.text
    assert f"resuming from {out}/model_0000005.pth (iteration 5; training continues at iteration 6)" in caplog.text


# ---- several processes stop at the same iteration --------------------------------------------------
def _agree(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    hook = StopOnSignal()
    seen = [hook.agreed_signal()]  # nobody has received anything
    if rank == 1:
        hook.handle(signal.SIGUSR1)  # only rank 1 receives the signal
    seen.append(hook.agreed_signal())
    results.put((rank, seen))
    dist.barrier()
    dist.destroy_process_group()


def test_every_rank_agrees_on_the_stop_signal():
    import multiprocessing as mp

    from cadet_d2.engine.launch import find_free_port

    ctx = mp.get_context("fork")
    results = ctx.Queue()
    port = find_free_port()
    procs = [ctx.Process(target=_agree, args=(r, 2, port, results)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert got == {0: [None, "SIGUSR1"], 1: [None, "SIGUSR1"]}


def test_the_launcher_passes_on_the_configured_stop_signals():
    """join_forwarding_stop_signals(context, ['SIGHUP']): a SIGHUP to the launcher goes on to its
    processes (here a ``sleep``, which SIGHUP ends) and the launcher lives on."""
    from cadet_d2.engine.signals import join_forwarding_stop_signals

    # SIGHUP's default action in the child, whatever this process inherited (nohup ignores it)
    child = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    calls = []

    def join() -> bool:  # torch's ProcessContext.join: True once every process has ended (or after 10 s)
        if not calls:
            os.kill(os.getpid(), signal.SIGHUP)
        calls.append(child.poll())
        time.sleep(0.05)
        return child.poll() is not None or len(calls) > 200

    process = types.SimpleNamespace(pid=child.pid, is_alive=lambda: child.poll() is None)
    context = types.SimpleNamespace(processes=[process], join=join)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        join_forwarding_stop_signals(context, ["SIGHUP"])
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGHUP
    assert signal.getsignal(signal.SIGHUP) == previous  # restored
