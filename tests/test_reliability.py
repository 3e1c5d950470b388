"""Reliability for long runs: the deterministic stream, atomic checkpoints, the NaN guard,
preflight checks, training-time load failures and weights-only loading."""
from __future__ import annotations

import logging
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from cadet_d2.data import DataError
from cadet_d2.data.stream import (
    DeterministicTrainLoader, LoadFailureLimitError, StreamIndex, plan_batches, seeded_rngs,
)
from cadet_d2.engine import CadetTrainer
from cadet_d2.engine.checkpoint import (
    CadetCheckpointer, UnsafeCheckpointError, capture_rng_state, restore_rng_state,
)
from cadet_d2.engine.preflight import PreflightError, check_free_space, check_output_dir
from conftest import registered_cfg, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum", "MODEL.FPN.OUT_CHANNELS", "32",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "SEED", "3"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _cfg(root: str, out: str, *opts: str):
    return registered_cfg(root, out, *FAST, *opts)


# ---- the deterministic stream -------------------------------------------------------------------
@pytest.mark.parametrize("groups", [None, [0, 1, 1, 0, 0, 1, 0]])
@pytest.mark.parametrize("world_size", [1, 2])
def test_batch_plan_resumes_where_it_left_off(groups, world_size):
    def take(start, count, rank):
        it = plan_batches(7, 5, 3, rank=rank, world_size=world_size, groups=groups, start_iter=start)
        return [next(it) for _ in range(count)]

    for rank in range(world_size):
        full = take(0, 12, rank)
        assert take(4, 8, rank) == full[4:]
        assert all(len(b) == 3 for b in full)
        if groups is not None:
            idx = StreamIndex(7, 5)
            assert all(len({groups[idx(k)] for k in b}) == 1 for b in full)  # one orientation per batch
    if groups is None and world_size == 2:  # ranks share out the positions
        assert {k for b in take(0, 4, 0) for k in b} | {k for b in take(0, 4, 1) for k in b} == set(range(24))


def test_stream_visits_every_image_once_per_epoch():
    idx = StreamIndex(10, 1)
    for epoch in range(3):
        assert sorted(idx(epoch * 10 + j) for j in range(10)) == list(range(10))
    assert [idx(j) for j in range(10)] != [idx(10 + j) for j in range(10)]  # a new order each epoch
    assert [StreamIndex(10, 1)(j) for j in range(10)] == [idx(j) for j in range(10)]


def test_seeded_rngs_restore_global_state():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with seeded_rngs(123):
        inside = (random.random(), np.random.rand(), torch.rand(1).item())
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == before
    with seeded_rngs(123):
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == inside


def _mixed_root(root: str) -> str:
    from conftest import make_tiny_root
    make_tiny_root(root, n=8, test_sets=("daytest1", "nighttest1"))
    for i in range(3):  # portrait images too
        write_image(os.path.join(root, "images", f"img{i:04d}.npy"),
                    np.random.default_rng(i).integers(0, 255, size=(64, 40, 5), dtype=np.uint8))
    return root


def _batches(cfg, start: int, count: int) -> list:
    loader = CadetTrainer.build_train_loader(cfg)
    assert isinstance(loader, DeterministicTrainLoader)
    loader.set_start(start)
    it = iter(loader)
    return [[(d["file_name"], d["image"], d["instances"].gt_boxes.tensor) for d in next(it)] for _ in range(count)]


def test_loader_batches_depend_on_position_only(tmp_path):
    root = _mixed_root(str(tmp_path / "data"))
    opts = ["INPUT.MIN_SIZE_TRAIN", "(48, 56, 64)", "INPUT.RANDOM_FLIP", "horizontal", "CADET.INPUT.BRIGHTNESS", "0.3"]
    cfg0 = _cfg(root, str(tmp_path / "o"), *opts)
    full = _batches(cfg0, 0, 9)
    resumed = _batches(cfg0, 5, 4)
    cfg2 = _cfg(root, str(tmp_path / "o"), *opts, "DATALOADER.NUM_WORKERS", "2")
    with_workers = _batches(cfg2, 5, 4)
    for a, b, c in zip(full[5:], resumed, with_workers):
        assert [x[0] for x in a] == [x[0] for x in b] == [x[0] for x in c]
        for (_, ia, ba), (_, ib, bb), (_, ic, bc) in zip(a, b, c):
            assert torch.equal(ia, ib) and torch.equal(ia, ic)
            assert torch.equal(ba, bb) and torch.equal(ba, bc)
    # the augmentation really is random (scale jitter): not every image of the stream has one size
    assert len({tuple(x[1].shape) for b in full for x in b}) > 2


# ---- atomic checkpoints -------------------------------------------------------------------------
def _partial_save_then_fail(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = CadetCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    ckpt.save("model_final", iteration=1)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", _partial_save_then_fail)
    for name in ("model_0000003", "model_final"):  # a new file, and overwriting an existing one
        with pytest.raises(OSError, match="No space left"):
            ckpt.save(name, iteration=3)
    monkeypatch.undo()
    assert not os.path.exists(tmp_path / "model_0000003.pth")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    for name in ("model_0000001.pth", "model_final.pth"):
        fresh = torch.nn.Linear(3, 2)
        CadetCheckpointer(fresh, str(tmp_path)).load(str(tmp_path / name))
        assert all(torch.equal(fresh.state_dict()[k], good[k]) for k in good)


def test_stale_temp_files_are_removed_on_resume(tmp_path):
    (tmp_path / ".model_0000005.pth.abc123.tmp").write_bytes(b"half")
    ckpt = CadetCheckpointer(torch.nn.Linear(1, 1), str(tmp_path))
    assert len(ckpt.remove_stale_temp_files()) == 1 and not os.listdir(tmp_path)


def test_rng_state_round_trip_and_weights_only(tmp_path):
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pth")
    a = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    b = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert a[:3] == b[:3] and torch.equal(a[3], b[3])


def test_multi_process_resume_state_is_gathered_per_rank(monkeypatch):
    """The bookkeeping of DDP runs, faked in one process: each rank restores its own entry."""
    from cadet_d2.engine import checkpoint as ck
    from cadet_d2.engine.checkpoint import RNGState

    torch.manual_seed(0)
    rank0 = capture_rng_state()
    torch.manual_seed(1)
    rank1 = capture_rng_state()
    monkeypatch.setattr(ck.comm, "all_gather", lambda obj: [rank0, rank1])
    saved = RNGState()
    saved.gather()
    state = saved.state_dict()
    assert len(state["per_rank"]) == 2
    monkeypatch.setattr(ck.comm, "get_rank", lambda: 1)
    RNGState().load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), rank1["torch"])
    monkeypatch.setattr(ck.comm, "get_rank", lambda: 2)  # more ranks than saved: warn, keep own
    restored = RNGState()
    restored.load_state_dict(state)
    assert not restored.restored


# ---- NaN guard --------------------------------------------------------------------------------------
def test_nan_loss_stops_and_writes_no_checkpoint(tiny_root, tmp_path):
    out = str(tmp_path / "run")
    cfg = _cfg(tiny_root, out, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
               "DATASETS.TEST", "('synth_daytest1',)")
    trainer = CadetTrainer(cfg)
    assert isinstance(trainer.checkpointer, CadetCheckpointer)
    trainer.resume_or_load(resume=False)
    forward = trainer.model.forward

    def nan_at_last_iteration(batched_inputs):
        from detectron2.utils.events import get_event_storage
        losses = forward(batched_inputs)
        if get_event_storage().iter == 3:
            losses = {k: v * float("nan") if k == "loss_cls" else v for k, v in losses.items()}
        return losses

    trainer.model.forward = nan_at_last_iteration
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    msg = str(e.value)
    assert "non-finite loss at iteration 3" in msg and "loss_cls" in msg and "model_0000001.pth" in msg
    files = os.listdir(out)
    assert "model_0000001.pth" in files and "model_0000003.pth" not in files and "model_final.pth" not in files
    # the final evaluation (DATASETS.TEST is set, TEST.EVAL_PERIOD 0: only at the end) is skipped after a NaN
    assert cfg.CADET.TEST.METRICS_FILE not in files and "inference" not in files, files
    assert trainer.last_eval_results is None
    with open(os.path.join(out, "last_checkpoint")) as f:
        last = torch.load(os.path.join(out, f.read()), weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_nonfinite_weights_are_never_saved(tiny_root, tmp_path):
    out = str(tmp_path / "run")
    cfg = _cfg(tiny_root, out, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")
    trainer = CadetTrainer(cfg)
    trainer.resume_or_load(resume=False)
    step = trainer.optimizer.step

    def poisoning_step(*args, **kwargs):
        step(*args, **kwargs)
        if trainer.iter == 1:  # a finite loss, but the update leaves inf in the weights
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = float("inf")

    trainer.optimizer.step = poisoning_step
    with pytest.raises(FloatingPointError, match=r"not saving checkpoint model_0000001.pth: NaN/inf"):
        trainer.train()
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000000.pth"]
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == "model_0000000.pth"


# ---- preflight ---------------------------------------------------------------------------------------
def test_output_dir_under_a_file_is_reported(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PreflightError, match=f"OUTPUT_DIR '{blocker}/run' is not a writable folder"):
        check_output_dir(str(blocker / "run"))


def test_read_only_output_dir_is_reported(tmp_path):
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    elif os.path.isdir("/proc/self"):
        ro = "/proc/self"  # root ignores permission bits; procfs takes no new files, not even root's
    else:
        pytest.skip("running as root without /proc: no folder that root cannot write to")
    try:
        with pytest.raises(PreflightError, match=f"OUTPUT_DIR '{ro}' is not a writable folder"):
            check_output_dir(str(ro))
    finally:
        if os.geteuid() != 0:
            ro.chmod(0o700)


def test_train_net_stops_before_training_on_unwritable_output(tiny_root, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "tools/train_net.py", "--config-file", "configs/Base-CADET.yaml",
                        "MODEL.DEVICE", "cpu", "CADET.DATA.ROOT", tiny_root, "OUTPUT_DIR", str(blocker / "run")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert f"OUTPUT_DIR '{blocker}/run' is not a writable folder" in r.stderr
    assert "Starting training" not in r.stdout + r.stderr


def test_nearly_full_disk_is_reported_before_training(tiny_root, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    with pytest.raises(PreflightError, match=f"not enough free disk space in OUTPUT_DIR '{tmp_path}'"):
        monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
        check_free_space(str(tmp_path), 10**6)
    cfg = _cfg(tiny_root, str(tmp_path / "run"), "DATASETS.TEST", "()")
    with pytest.raises(PreflightError, match=r"this run \(\d+ periodic checkpoint\(s\) kept .* MiB of weights, .* of optimizer state"):
        CadetTrainer(cfg)


# ---- training-time load failures ------------------------------------------------------------------
def _train_files(loader: DeterministicTrainLoader) -> list[str]:
    return [loader.dataset.dataset[i]["file_name"] for i in range(loader.num_images)]


def _corrupt(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(100)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("workers", [0, 2])
def test_load_failures_are_skipped_counted_then_stop(tiny_root, tmp_path, workers):
    cfg = _cfg(tiny_root, str(tmp_path), "CADET.DATA.MAX_LOAD_FAILURES", "2", "DATALOADER.NUM_WORKERS", str(workers))
    loader = CadetTrainer.build_train_loader(cfg)  # registered sizes are read here
    files = _train_files(loader)
    bad = files[1]
    _corrupt(bad)  # a file corrupted after registration
    # where the stream shows it: once per epoch (8 images, 2 per batch)
    plan = iter(loader.plan(0))
    expected = [b for b, batch in zip(range(40), plan) for k in batch if loader.dataset.index(k) == 1][:3]
    capture = _Capture()
    logging.getLogger("cadet_d2.data.stream").addHandler(capture)
    try:
        it = iter(loader)
        for _ in range(4):  # one epoch: the bad image is seen once
            assert len(next(it)) == 2  # a fallback image fills its place
        assert [f["path"] for f in loader.load_failures] == [bad]
        assert any(bad in m and "1/2 load failures" in m for m in capture.messages)
        with pytest.raises(LoadFailureLimitError) as e:
            for _ in range(40):
                next(it)
    finally:
        logging.getLogger("cadet_d2.data.stream").removeHandler(capture)
    msg = str(e.value)
    assert "3 training samples failed to load, more than CADET.DATA.MAX_LOAD_FAILURES = 2" in msg
    assert msg.count(bad) == 3
    # counted exactly and in stream order, whatever the number of workers
    assert [f["iteration"] for f in e.value.failures] == expected
    assert loader.state_dict()["load_failures"] == [loader.load_failures]  # saved with each checkpoint


def test_first_load_failure_stops_by_default(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, str(tmp_path))
    loader = CadetTrainer.build_train_loader(cfg)
    bad = _train_files(loader)[3]
    _corrupt(bad)
    with pytest.raises(LoadFailureLimitError, match=f"{bad}: unreadable .npy"):
        for _ in iter(loader):
            pass


def test_evaluation_never_skips(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, str(tmp_path), "CADET.DATA.MAX_LOAD_FAILURES", "5")
    loader = CadetTrainer.build_test_loader(cfg, "synth_daytest1")
    _corrupt(os.path.join(tiny_root, "daytest1", "images", "daytest10001.npy"))
    with pytest.raises(DataError, match="daytest10001.npy"):
        for _ in loader:
            pass


def test_random_seed_is_saved_and_reused_on_resume(tiny_root, tmp_path):
    out = str(tmp_path / "run")
    cfg = _cfg(tiny_root, out, "SEED", "-1", "SOLVER.MAX_ITER", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
               "DATASETS.TEST", "()")
    first = CadetTrainer(cfg)
    first.resume_or_load(resume=False)
    first.train()
    seed = first.checkpointer.checkpointables["data_stream"].seed
    again = CadetTrainer(cfg)
    assert again.data_loader.seed != seed  # a fresh random seed ...
    again.resume_or_load(resume=True)
    assert again.data_loader.seed == seed  # ... replaced by the checkpoint's
    assert again.start_iter == 1


def _resume_warnings(cfg) -> tuple[list[str], CadetTrainer]:
    """The "not an exact resume" warnings of ``CadetTrainer(cfg).resume_or_load(resume=True)``."""
    capture = _Capture()
    logging.getLogger("cadet_d2").addHandler(capture)
    try:
        trainer = CadetTrainer(cfg)
        trainer.resume_or_load(resume=True)
    finally:
        logging.getLogger("cadet_d2").removeHandler(capture)
    return [m for m in capture.messages if "not an exact resume" in m], trainer


def test_resume_with_another_batch_accumulation_or_world_size_warns(tiny_root, tmp_path):
    out = str(tmp_path / "run")
    base = ("SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")
    first = CadetTrainer(_cfg(tiny_root, out, *base))
    first.resume_or_load(resume=False)
    first.train()
    same, trainer = _resume_warnings(_cfg(tiny_root, out, *base))
    assert same == [] and trainer.start_iter == 2  # the same settings: an exact resume, no warning
    for opts, change in ((("SOLVER.IMS_PER_BATCH", "4"), "batch_size: 2 -> 4"),
                         (("SOLVER.ACCUM_STEPS", "2"), "batches_per_iteration: 1 -> 2")):
        warned, _ = _resume_warnings(_cfg(tiny_root, out, *base, *opts))
        assert len(warned) == 1 and change in warned[0], (opts, warned)
    # the checkpoint as 2 processes write it (IMS_PER_BATCH 2: 1 image per rank), resumed by one
    path = os.path.join(out, "model_final.pth")
    ckpt = torch.load(path, weights_only=True)
    ckpt["data_stream"].update(world_size=2, batch_size=1, load_failures=[[], []])
    ckpt["rng"]["per_rank"] = ckpt["rng"]["per_rank"] * 2
    torch.save(ckpt, path)
    warned, _ = _resume_warnings(_cfg(tiny_root, out, *base))
    assert len(warned) == 1 and "batch_size: 1 -> 2" in warned[0] and "world_size: 2 -> 1" in warned[0], warned


def test_resume_reads_the_older_checkpoint_layout(tiny_root, tmp_path):
    """Checkpoints of the DefaultTrainer-based engine (and of current Detectron2's DefaultTrainer)
    keep optimizer and scheduler inside ``trainer``: they resume exactly, without a warning."""
    out = str(tmp_path / "run")
    base = ("SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")
    first = CadetTrainer(_cfg(tiny_root, out, *base))
    first.resume_or_load(resume=False)
    first.train()
    path = os.path.join(out, "model_final.pth")
    ckpt = torch.load(path, weights_only=True)
    optimizer, scheduler = ckpt.pop("optimizer"), ckpt.pop("scheduler")
    assert optimizer["state"] and scheduler["last_epoch"] == 2
    ckpt["trainer"] = {"iteration": ckpt["trainer"]["iteration"], "_trainer": {"optimizer": optimizer},
                       "hooks": {"detectron2.engine.hooks.LRScheduler": scheduler}}
    torch.save(ckpt, path)
    warned, trainer = _resume_warnings(_cfg(tiny_root, out, *base))
    assert warned == [] and trainer.start_iter == 2
    assert trainer.scheduler.last_epoch == 2
    loaded = trainer.optimizer.state_dict()["state"]
    assert loaded.keys() == optimizer["state"].keys()
    assert all(torch.equal(loaded[k]["momentum_buffer"], v["momentum_buffer"]) for k, v in optimizer["state"].items())


def test_detectron2_train_loader_without_the_deterministic_stream(tiny_root, tmp_path):
    out = str(tmp_path / "run")
    opts = ("CADET.DATA.DETERMINISTIC_STREAM", "False", "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler",
            "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()")
    capture = _Capture()
    logging.getLogger("cadet_d2").addHandler(capture)
    try:
        trainer = CadetTrainer(_cfg(tiny_root, out, *opts))
    finally:
        logging.getLogger("cadet_d2").removeHandler(capture)
    assert not isinstance(trainer.data_loader, DeterministicTrainLoader)
    assert any("not a DeterministicTrainLoader" in m and "no exact resume" in m for m in capture.messages)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and np.isfinite(losses).all()
    final = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert "data_stream" not in final and {"model", "optimizer", "scheduler", "rng"} <= set(final)
    # the deterministic stream samples uniformly: another sampler needs it off (checked with the config)
    with pytest.raises(ValueError, match="needs CADET.DATA.DETERMINISTIC_STREAM False"):
        _cfg(tiny_root, out, "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler")
    # and only the deterministic stream skips samples that fail to load
    with pytest.raises(ValueError, match="MAX_LOAD_FAILURES = 3 needs CADET.DATA.DETERMINISTIC_STREAM True"):
        _cfg(tiny_root, out, *opts[:2], "CADET.DATA.MAX_LOAD_FAILURES", "3")


# ---- weights-only loading -----------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("ext", [".pth", ".pkl"])
def test_pickled_objects_in_weights_are_refused(tmp_path, ext):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / f"evil{ext}")
    payload = {"model": {"weight": np.zeros((2, 3), np.float32)}, "__author__": "x", "extra": _Evil(marker)}
    if ext == ".pth":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    ckpt = CadetCheckpointer(torch.nn.Linear(3, 2), str(tmp_path / "out"))
    with pytest.raises(UnsafeCheckpointError, match="not loaded: the .*(weights_only=True|never unpickles)"):
        ckpt.resume_or_load(path, resume=False)
    assert not os.path.exists(marker)


def test_plain_pkl_and_pth_weights_load(tmp_path):
    model = torch.nn.Linear(3, 2)
    weights = {"weight": np.full((2, 3), 2.0, np.float32), "bias": np.ones(2, np.float32)}
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"model": weights, "__author__": "test"}, f)
    CadetCheckpointer(model).load(str(tmp_path / "w.pkl"))
    assert torch.equal(model.weight, torch.full((2, 3), 2.0))
    torch.save({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, tmp_path / "w.pth")
    CadetCheckpointer(model).load(str(tmp_path / "w.pth"))
    assert torch.equal(model.weight, torch.zeros(2, 3))


def test_atomic_writes_get_the_permissions_of_open(tmp_path):
    from cadet_d2.engine.checkpoint import atomic_torch_save
    from cadet_d2.utils.io import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(str(tmp_path / "a.json"), b"{}")
        atomic_torch_save({"x": torch.zeros(1)}, str(tmp_path / "m.pth"))
    finally:
        os.umask(old)
    for name in ("a.json", "m.pth"):  # mkstemp alone would give 0o600: unreadable by the group
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["a.json", "m.pth"]  # no temporary file left
