"""Speed and memory features: bf16 autocast on the CPU, gradient accumulation, activation
checkpointing, fast input, torch.compile wiring, the tensor-memory tracker and the benchmark."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.utils.events import EventStorage

from cadet_d2.data.npy import select_channels
from cadet_d2.data.stream import DeterministicTrainLoader
from cadet_d2.engine import CadetTrainer
from cadet_d2.engine.precision import resolve_precision
from cadet_d2.engine.step import AccumAMPTrainer
from cadet_d2.bench.speed import benchmark, random_batch
from cadet_d2.utils.memory import TensorMemoryTracker
from conftest import registered_cfg, tiny_cfg

FAST = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "SEED", "3"]
BF16 = ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "bfloat16"]


def cuda(test):
    """Marks a test that needs a CUDA GPU (``-m cuda`` selects them); skipped without one."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _cfg(root: str, out: str, *opts: str):
    return registered_cfg(root, out, *FAST, *opts)


# ---- config -----------------------------------------------------------------------------------
def test_new_keys_have_safe_defaults(tmp_path):
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"))
    assert cfg.SOLVER.ACCUM_STEPS == 1 and cfg.CADET.SOLVER.AMP_DTYPE == "float16"
    assert cfg.CADET.BACKBONE.COMPILE is False and resolve_precision(cfg).name == "fp32"
    assert resolve_precision(tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16)).name == "bf16"


def test_cpu_bf16_check_matches_the_cpu_flags():
    """``cpu_has_fast_bf16`` for real (not faked): oneDNN runs bf16 natively with AVX-512 (F, BW,
    VL, DQ: "avx512_core") or AVX2 with AVX-NE-CONVERT; the flags come from /proc/cpuinfo."""
    from cadet_d2.engine.precision import cpu_has_fast_bf16

    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo")
    with open("/proc/cpuinfo") as f:
        lines = [line for line in f if line.startswith("flags")]
    if not lines:
        pytest.skip("no x86 CPU flags in /proc/cpuinfo")
    flags = set(lines[0].split(":", 1)[1].split())
    avx512_core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    if avx512_core:
        assert cpu_has_fast_bf16() is True
    elif "avx_ne_convert" not in flags:  # e.g. Zen 3 (AVX2 only): bf16 falls back to reference kernels
        assert cpu_has_fast_bf16() is False
    else:
        pytest.skip("AVX2 with AVX-NE-CONVERT: oneDNN's choice depends on its version")


@pytest.mark.parametrize("opts, needle", [
    (["SOLVER.AMP.ENABLED", "True"], "on the CPU set CADET.SOLVER.AMP_DTYPE bfloat16"),
    (["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "float8"], "'float8' is not allowed"),
    (["SOLVER.ACCUM_STEPS", "0"], "SOLVER.ACCUM_STEPS = 0 must be an integer >= 1"),
])
def test_impossible_settings_stop_early(tmp_path, opts, needle):
    with pytest.raises(ValueError) as e:
        tiny_cfg(str(tmp_path), str(tmp_path / "o"), *opts)
    assert needle in str(e.value)


# ---- bf16 autocast on the CPU ------------------------------------------------------------------------
def test_bf16_autocast_trains_on_cpu(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, str(tmp_path / "run"), *BF16, "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()",
               "CADET.FUSION.NAME", "cssa")
    trainer = CadetTrainer(cfg)
    assert isinstance(trainer.step, AccumAMPTrainer) and trainer.step.grad_scaler is None
    assert trainer.step.precision.name == "bf16" and "grad_scaler" not in trainer.checkpointer.checkpointables
    bottom_up = trainer.model.backbone.bottom_up
    seen: list[torch.dtype] = []
    bottom_up.aux_stream.stages[1].blocks[0].attn.q.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    bottom_up.fusions[2].register_forward_hook(lambda m, i, o: seen.append(o.fused.dtype))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert seen and set(seen) == {torch.bfloat16}, seen  # autocast is really on, in streams and fusion
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights


@cuda
def test_fp16_training_evaluates_in_fp32(tiny_root, tmp_path):
    """fp16 autocast (with its grad scaler) in the training step only: evaluation runs in fp32."""
    out = str(tmp_path / "run")
    cfg = _cfg(tiny_root, out, "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE",
               "float16", "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "('synth_daytest1',)", "TEST.EVAL_PERIOD", "0")
    trainer = CadetTrainer(cfg)
    assert trainer.step.precision.name == "fp16" and "grad_scaler" in trainer.checkpointer.checkpointables
    seen: dict[bool, set] = {True: set(), False: set()}  # model.training -> output dtypes
    q = trainer.model.backbone.bottom_up.aux_stream.stages[1].blocks[0].attn.q
    q.register_forward_hook(lambda m, i, o: seen[trainer.model.training].add(o.dtype))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert seen[True] == {torch.float16} and seen[False] == {torch.float32}, seen
    assert os.path.exists(os.path.join(out, cfg.CADET.TEST.METRICS_FILE))
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    assert final["grad_scaler"]["scale"] > 0


# ---- gradient accumulation ------------------------------------------------------------------------
# Every anchor and every proposal sampled (batch size per image >> their number, positive fraction 1),
# no drop path: the loss is a deterministic function of the images, so one batch of 2 images and
# two accumulated micro-batches of 1 must give the same gradient (same-size images: no padding).
EXACT = ["CADET.BACKBONE.DROP_PATH_RATE", "0.0", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "100000",
         "MODEL.RPN.POSITIVE_FRACTION", "1.0", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "100000",
         "MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.0"]


def _one_step_grads(cfg, batches: list[list[dict]], accum: int) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the step leaves the weights (and .grad) as they are
    trainer = AccumAMPTrainer(model, iter(batches), opt, accum_steps=accum)
    with EventStorage(0) as storage:
        trainer.run_step()
        logged = {k: h.latest() for k, h in storage.histories().items() if k.startswith("loss") or k == "total_loss"}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing and len(trainable) > 100, f"{len(missing)} trainable parameter(s) got no gradient: {missing[:5]}"
    return {n: p.grad.clone() for n, p in model.named_parameters()}, logged


@pytest.mark.parametrize("fusion", ["sum", "cssa", "gaff"])
def test_accumulated_gradients_match_one_big_batch(tmp_path, fusion):
    # Not frm_ffm: its FFM has a BatchNorm, whose batch statistics differ between a batch of 2 and
    # micro-batches of 1 (docs/scaling.md).
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, *EXACT, "CADET.FUSION.NAME", fusion,
                   "CADET.FUSION.DEFAULT", fusion)
    images = random_batch(2, 5, 64, 96, boxes=2, seed=1)
    accumulated, logged_acc = _one_step_grads(cfg, [[images[0]], [images[1]]], accum=2)
    big, logged_big = _one_step_grads(cfg, [images], accum=1)
    assert accumulated.keys() == big.keys() and len(big) > 100
    for name, g in big.items():
        torch.testing.assert_close(accumulated[name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()) + 1e-9,
                                   msg=lambda m, n=name: f"{n}: {m}")
    for k, v in logged_big.items():  # logged losses: the mean over the micro-batches
        assert logged_acc[k] == pytest.approx(v, rel=1e-4, abs=1e-7), k


def test_grad_scaler_path_unscales_accumulated_gradients(tmp_path):
    """The fp16 path's loss scaling, exercised on the CPU with a CPU GradScaler in fp32."""
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, *EXACT, "CADET.FUSION.NAME", "sum",
                   "CADET.FUSION.DEFAULT", "sum")
    images = random_batch(2, 5, 64, 96, boxes=2, seed=1)
    plain, _ = _one_step_grads(cfg, [[images[0]], [images[1]]], accum=2)
    torch.manual_seed(0)
    model = build_model(cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    trainer = AccumAMPTrainer(model, iter([[images[0]], [images[1]]]), torch.optim.SGD(model.parameters(), lr=0.0),
                              accum_steps=2, grad_scaler=scaler)
    with EventStorage(0):
        trainer.run_step()
    compared = 0
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        torch.testing.assert_close(p.grad, plain[name], rtol=1e-4, atol=1e-5 * float(plain[name].abs().max()))
        compared += 1
    assert compared == len(plain)  # every parameter (all trainable, all with a gradient in the plain step)
    assert trainer.state_dict()["grad_scaler"]["scale"] == 2.0**10  # saved with the trainer state


def test_accumulation_counts_optimizer_steps(tiny_root, tmp_path):
    out = str(tmp_path / "run")
    cfg = _cfg(tiny_root, out, "SOLVER.ACCUM_STEPS", "2", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "4",
               "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(3,)", "SOLVER.BASE_LR", "0.01",
               "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()")
    trainer = CadetTrainer(cfg)
    inner = trainer.step
    assert isinstance(inner, AccumAMPTrainer) and inner.accum_steps == 2
    batches, steps = [], []
    source = trainer.data_loader

    def counting():
        for b in source:  # iterated from the first step on, after resume_or_load set the start
            batches.append(len(b))
            yield b

    inner.data_loader = counting()
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps.append(trainer.iter), step(*a, **k))[1]
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert steps == [0, 1, 2, 3] and batches == [1] * 8  # 4 optimizer steps of 2 micro-batches of 1 image

    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched, expected = build_lr_scheduler(cfg, probe), []
    for _ in range(4):
        expected.append(probe.param_groups[0]["lr"])
        probe.step()
        sched.step()
    logged = [v for v, _ in trainer.storage.history("lr").values()]
    assert logged == pytest.approx(expected)  # warm-up and decay in optimizer steps
    assert expected[0] < expected[2] and expected[3] == pytest.approx(expected[2] * cfg.SOLVER.GAMMA)
    final = torch.load(f"{out}/model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 3 and final["data_stream"]["batches_per_iteration"] == 2
    assert torch.load(f"{out}/model_0000001.pth", map_location="cpu", weights_only=True)["iteration"] == 1


def test_stream_starts_at_the_resumed_optimizer_step():
    records = [{"file_name": f"f{i}", "width": 64 if i % 3 else 40, "height": 48} for i in range(9)]

    def stream(start: int, per_iteration: int, count: int) -> list[list[str]]:
        loader = DeterministicTrainLoader(records, lambda d: d["file_name"], seed=5, batch_size=2,
                                          batches_per_iteration=per_iteration)
        loader.set_start(start)
        it = iter(loader)
        return [next(it) for _ in range(count)]

    full = stream(0, 1, 12)
    assert stream(0, 3, 12) == full  # the same batches, grouped 3 per optimizer step
    assert stream(2, 3, 6) == full[6:]  # optimizer step 2 starts at batch 6


# ---- activation checkpointing ---------------------------------------------------------------------
def _grads_and_calls(cfg, images: list[dict]) -> tuple[dict, dict[str, int]]:
    torch.manual_seed(0)
    model = build_model(cfg)
    bottom_up = model.backbone.bottom_up
    calls: dict[str, int] = {}
    watched = {f"{s}.stage{i + 1}": getattr(bottom_up, s).stages[i].blocks[0]
               for s in ("rgb_stream", "aux_stream") for i in range(4)}
    watched.update({f"fusion{i + 1}": f for i, f in enumerate(bottom_up.fusions)})
    for name, module in watched.items():
        # a pre-hook: the recomputation stops once it has what backward needs (checkpoint early stop)
        module.register_forward_pre_hook(lambda m, i, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
    torch.manual_seed(1)  # the same drop-path and sampling draws in both runs
    with EventStorage(0):
        sum(model(images).values()).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, calls


def test_activation_checkpointing_recomputes_listed_stages_with_identical_gradients(tmp_path):
    base = [*FAST, "CADET.BACKBONE.DROP_PATH_RATE", "0.2", "CADET.FUSION.NAME", "frm_ffm"]
    plain = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *base)
    ckpt = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *base, "CADET.BACKBONE.CHECKPOINT_STAGES", "[2, 4]")
    model = build_model(ckpt).backbone.bottom_up
    for stream in (model.rgb_stream, model.aux_stream):  # both streams, listed stages only
        assert [s.grad_checkpointing for s in stream.stages] == [False, True, False, True]
    assert model.checkpoint_stages == (2, 4)

    images = random_batch(2, 5, 64, 96, seed=2)
    g_plain, calls_plain = _grads_and_calls(plain, images)
    g_ckpt, calls_ckpt = _grads_and_calls(ckpt, images)
    assert set(calls_plain.values()) == {1}
    recomputed = sorted(k for k, n in calls_ckpt.items() if n == 2)  # forward, then again in backward
    assert recomputed == ["aux_stream.stage2", "aux_stream.stage4", "fusion2", "fusion4",
                          "rgb_stream.stage2", "rgb_stream.stage4"], calls_ckpt
    assert g_plain.keys() == g_ckpt.keys()
    for name, g in g_plain.items():
        torch.testing.assert_close(g_ckpt[name], g, rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")


def test_activation_checkpointing_saves_activation_memory(tmp_path):
    peaks = {}
    for stages in ("[]", "[1, 2, 3, 4]"):
        cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, "CADET.BACKBONE.CHECKPOINT_STAGES", stages)
        r = benchmark(cfg, "train", iters=1, warmup=0, batch=1, height=96, width=128, memory=True)
        peaks[stages] = r["activation_peak_mb"]
    assert peaks["[1, 2, 3, 4]"] < 0.8 * peaks["[]"], peaks


# ---- fast input, compile, memory tracker, benchmark ----------------------------------------------------
@pytest.mark.parametrize("indices", [[0, 1, 2, 3, 4], [0, 1, 2], [3], [4, 3], [0, 1, 2, 4]])
def test_select_channels_matches_fancy_indexing(indices):
    image = np.random.default_rng(0).integers(0, 255, size=(7, 9, 5), dtype=np.uint8)
    out = select_channels(image, indices)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image[:, :, indices].astype(np.float32))


def test_loader_pins_memory_only_for_cuda(tiny_root, tmp_path):
    from cadet_d2.data.mapper import MultiModalDatasetMapper
    from cadet_d2.data.stream import build_deterministic_train_loader

    cfg = _cfg(tiny_root, str(tmp_path / "o"))  # MODEL.DEVICE cpu: nothing to copy to a GPU
    loader = build_deterministic_train_loader(cfg, MultiModalDatasetMapper(cfg, True))
    assert loader.pin_memory is False
    assert not next(iter(loader))[0]["image"].is_pinned()


@cuda
def test_loader_pins_memory_for_a_cuda_model(tiny_root, tmp_path):
    from cadet_d2.data.mapper import MultiModalDatasetMapper
    from cadet_d2.data.stream import build_deterministic_train_loader

    cfg = _cfg(tiny_root, str(tmp_path / "o"), "MODEL.DEVICE", "cuda")
    loader = build_deterministic_train_loader(cfg, MultiModalDatasetMapper(cfg, True))
    assert loader.pin_memory is True
    batch = next(iter(loader))
    assert batch and all(d["image"].is_pinned() for d in batch)  # page-locked host memory, for async copies


def test_compile_option_compiles_the_backbone_in_place(tmp_path, monkeypatch):
    import functools

    # TorchDynamo with its "eager" backend: the backbone is traced as in training (graph capture,
    # guards) but runs torch's own kernels, not C++ that inductor would first build for minutes.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch.manual_seed(0)
    plain = build_model(tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST)).eval()
    torch.manual_seed(0)
    compiled = build_model(tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, "CADET.BACKBONE.COMPILE", "True")).eval()
    assert list(plain.state_dict()) == list(compiled.state_dict())  # checkpoints keep their keys
    traced: dict[str, list[bool]] = {"plain": [], "compiled": []}
    for name, model in (("plain", plain), ("compiled", compiled)):
        # inside the backbone: runs under torch.compile's tracing only when the backbone is compiled
        model.backbone.bottom_up.rgb_stream.stages[0].blocks[0].register_forward_pre_hook(
            lambda m, i, n=name: traced[n].append(torch.compiler.is_compiling()))
    image = random_batch(1, 5, 64, 96, seed=4)
    with torch.no_grad():
        features = {n: m.backbone(m.preprocess_image(image).tensor) for n, m in (("plain", plain),
                                                                              ("compiled", compiled))}
    assert traced["plain"] == [False] and traced["compiled"] and all(traced["compiled"]), traced
    assert features["plain"].keys() == features["compiled"].keys()
    for k, v in features["plain"].items():
        torch.testing.assert_close(features["compiled"][k], v, rtol=1e-4, atol=1e-4)


def test_tensor_memory_tracker_counts_live_storages():
    tracker = TensorMemoryTracker("cpu")
    with tracker:
        a = torch.empty(1024, 256)  # 1 MiB
        view = a[:10]
        del a
        assert tracker.live_bytes == 2**20  # a view keeps its storage alive
        b = torch.empty(512, 256)
        del view, b
    assert tracker.live_bytes == 0 and tracker.peak_bytes == 2**20 + 2**19


def test_benchmark_reports_precision_accumulation_and_memory(tmp_path):
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, *BF16, "SOLVER.ACCUM_STEPS", "2")
    r = benchmark(cfg, "train", iters=1, warmup=1, batch=1, height=64, width=96, memory=True)
    assert r["precision"] == "bf16" and r["accum_steps"] == 2 and r["images_per_step"] == 2
    assert r["images_per_s"] > 0 and r["peak_tensor_mb"] > r["state_tensor_mb"] > 0
    assert r["machine"] and r["threads"] == 1 and "profile" not in r


def test_benchmark_profile_lists_the_top_ops(tmp_path):
    # fp32: on a CPU without AVX-512 BF16, bf16 depthwise convolutions run as one small kernel
    # per channel, and parsing the profiler's ~800k events of one step takes minutes.
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST)
    r = benchmark(cfg, "train", iters=1, warmup=0, batch=1, height=64, width=96, profile=5)
    ops = r["profile"]
    assert len(ops) == 5 and all(op["op"] and op["calls"] > 0 for op in ops) and ops[0]["op"].startswith("aten::")
    times = [op["self_cpu_ms"] for op in ops]
    assert times == sorted(times, reverse=True) and times[0] > 0 and 0 < sum(op["percent"] for op in ops) <= 100.0001


def test_paired_benchmark_alternates_settings(tmp_path):
    from cadet_d2.bench.speed import paired_benchmark

    cfgs = {"sum": tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, "CADET.FUSION.NAME", "sum"),
            "accum": tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, "CADET.FUSION.NAME", "sum",
                              "SOLVER.ACCUM_STEPS", "2")}
    r = paired_benchmark(cfgs, rounds=2, warmup=0, batch=1, height=64, width=96)
    s = r["settings"]
    times = s["accum"]["step_times_s"]
    assert s["sum"]["ratio_to_first"] == 1.0 and len(times) == 2 and min(times) > 0
    # 2 rounds: the upper median is the slower step; 1 image x 2 micro-batches per step
    assert s["accum"]["median_step_s"] == max(times)
    assert s["accum"]["images_per_s"] == pytest.approx(2 / max(times))


def test_paired_benchmark_names_a_diverged_setting_and_runs_the_others(tmp_path):
    from cadet_d2.bench.speed import paired_benchmark

    base = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, "CADET.FUSION.NAME", "sum")
    inf = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, "CADET.FUSION.NAME", "sum",
                   "MODEL.PIXEL_MEAN", "[1e999, 0, 0, 0, 0]")  # an infinite mean: non-finite losses
    r = paired_benchmark({"base": base, "inf mean": inf}, rounds=2, warmup=0, batch=1, height=64, width=96)
    assert set(r["diverged"]) == {"inf mean"} and r["settings"]["inf mean"]["median_step_s"] is None
    assert "Training has diverged" in r["settings"]["inf mean"]["diverged"]
    assert len(r["settings"]["base"]["step_times_s"]) == 2 and r["settings"]["base"]["ratio_to_first"] == 1.0


def test_step_profile_lists_every_op_and_model_part(tmp_path):
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST)
    out = tmp_path / "step.md"
    r = benchmark(cfg, "train", iters=1, warmup=0, batch=1, height=64, width=96, step_profile=str(out))
    text = out.read_text()
    assert r["step_profile"] == str(out) and text.startswith("# Whole-step profile: fp32")
    for part in ("backbone.bottom_up.rgb_stream", "backbone.bottom_up.aux_stream", "backbone.bottom_up.fusions.0",
                 "proposal_generator", "roi_heads"):
        assert f"| {part} |" in text, part
    assert "| aten::convolution_backward |" in text and "## Every op and input shapes" in text


# ---- exact resume with accumulation (tools/train_net.py, SIGKILL, --resume) -------------------------
def test_kill_and_resume_with_accumulation_gives_identical_weights(tmp_path):
    import re

    from conftest import make_tiny_root
    from test_resume import MAX_ITER, _assert_identical, _cmd, _final_state, _run, _run_and_kill

    root = make_tiny_root(str(tmp_path / "data"), n=12)
    accum = ("SOLVER.ACCUM_STEPS", "2")
    full = str(tmp_path / "uninterrupted")
    _run(_cmd(root, full, 0, *accum))
    out = str(tmp_path / "killed")
    _run_and_kill(_cmd(root, out, 0, *accum), out)
    log = _run(_cmd(root, out, 0, "--resume", *accum))
    start = int(re.search(r"Starting training from iteration (\d+)", log).group(1))
    assert 2 <= start < MAX_ITER and "effective batch 4 images" in log
    resumed = _final_state(out)
    assert resumed["iteration"] == MAX_ITER - 1
    _assert_identical(_final_state(full), resumed)



@pytest.mark.parametrize("fusion", ["cssa", "gaff"])
def test_compiled_fusion_statistics_break_no_graph(tmp_path, fusion):
    """The fusion modules log statistics at every 20th iteration (the storage's iteration, a
    ``float()`` of a tensor). Traced by torch.compile they must do neither: it would break the
    graph and make the iteration a guard (recompiles) or a dynamic size (on which inductor failed)."""
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST, "CADET.FUSION.NAME", fusion,
                   "CADET.FUSION.DEFAULT", fusion)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = model.preprocess_image(random_batch(1, 5, 64, 96, seed=4)).tensor
    with EventStorage(0) as storage:
        model.backbone.bottom_up(x)
    assert any(k.startswith("fusion/stage") for k in storage.latest()), "eager: the statistics are logged"
    compiled = torch.compile(model.backbone.bottom_up, backend="eager", fullgraph=True)  # any break: an error
    with EventStorage(0) as storage:
        compiled(x)
    assert not [k for k in storage.latest() if k.startswith("fusion/")]
