"""CUDA paths (``pytest -m cuda``, run by ``make gpu-check``; skipped without a GPU): fp16 with
the grad scaler, bf16, accumulation, activation checkpointing, one-process NCCL DDP, pinned
memory, evaluation, export parity, and the planner against ``torch.cuda.max_memory_allocated``."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from cadet_d2.engine.precision import resolve_precision
from cadet_d2.engine.step import AccumAMPTrainer
from cadet_d2.bench.speed import random_batch
from conftest import registered_cfg, tiny_cfg

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = ["MODEL.DEVICE", "cuda", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64"]
FP16 = ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "float16"]
BF16 = ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "bfloat16"]
EXACT = ["CADET.BACKBONE.DROP_PATH_RATE", "0.0", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "100000",
         "MODEL.RPN.POSITIVE_FRACTION", "1.0", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "100000",
         "MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.0", "CADET.FUSION.NAME", "cssa", "CADET.FUSION.DEFAULT", "cssa"]


def _cfg(tmp_path, *opts):
    return tiny_cfg(str(tmp_path), str(tmp_path / "o"), *CUDA, *opts)


def _train(cfg, steps: int = 3, batch: int = 2, model=None, accum: int = 1):
    torch.manual_seed(0)
    model = model if model is not None else build_model(cfg)
    data = random_batch(batch, len(cfg.MODEL.PIXEL_MEAN), 64, 96, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    trainer = AccumAMPTrainer(model, itertools.repeat(data), opt, accum_steps=accum, precision=resolve_precision(cfg))
    with EventStorage(0) as storage:
        for _ in range(steps):
            trainer.run_step()
            storage.step()
        losses = [v for v, _ in storage.history("total_loss").values()]
    return trainer, model, losses


@pytest.mark.parametrize("opts, name", [(FP16, "fp16"), (BF16, "bf16"), ([], "fp32")])
def test_precisions_train_with_finite_losses(tmp_path, opts, name):
    cfg = _cfg(tmp_path, *opts)
    trainer, model, losses = _train(cfg)
    assert resolve_precision(cfg).name == name and len(losses) == 3 and np.isfinite(losses).all()
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())
    if name == "fp16":
        assert trainer.grad_scaler is not None and trainer.state_dict()["grad_scaler"]["scale"] > 0
    else:
        assert trainer.grad_scaler is None


def test_accumulated_gradients_match_one_batch_on_cuda(tmp_path):
    cfg = _cfg(tmp_path, *EXACT)
    images = [{**d, "image": d["image"]} for d in random_batch(2, 5, 64, 96, boxes=2, seed=1)]
    grads = []
    for batches, accum in (([images], 1), ([[images[0]], [images[1]]], 2)):
        torch.manual_seed(0)
        model = build_model(cfg)
        trainer = AccumAMPTrainer(model, iter(batches), torch.optim.SGD(model.parameters(), lr=0.0), accum_steps=accum)
        with EventStorage(0):
            trainer.run_step()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    for n, g in grads[0].items():  # cuDNN / cuBLAS reduction order differs between the two: looser than on CPU
        torch.testing.assert_close(grads[1][n], g, rtol=1e-3, atol=1e-4 * float(g.abs().max()) + 1e-8)


def test_activation_checkpointing_on_cuda_same_gradients_less_memory(tmp_path):
    out = {}
    for stages in ("[]", "[1, 2, 3, 4]"):
        cfg = _cfg(tmp_path, *EXACT, "CADET.BACKBONE.CHECKPOINT_STAGES", stages)
        torch.manual_seed(0)
        model = build_model(cfg)
        data = random_batch(2, 5, 128, 160, seed=2)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with EventStorage(0):
            sum(model(data).values()).backward()
        torch.cuda.synchronize()
        out[stages] = (torch.cuda.max_memory_allocated() - base,
                       {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    (plain_mem, plain), (ckpt_mem, ckpt) = out["[]"], out["[1, 2, 3, 4]"]
    assert ckpt_mem < plain_mem
    for n, g in plain.items():
        torch.testing.assert_close(ckpt[n], g, rtol=1e-3, atol=1e-5 * float(g.abs().max()) + 1e-8)


def test_one_process_nccl_ddp_trains(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cfg = _cfg(tmp_path, *BF16)
        torch.manual_seed(0)
        model = DistributedDataParallel(build_model(cfg), device_ids=[torch.cuda.current_device()],
                                        broadcast_buffers=False)
        before = {n: p.detach().clone() for n, p in model.module.named_parameters()}
        _, _, losses = _train(cfg, steps=2, model=model, accum=2)
        assert np.isfinite(losses).all()
        changed = [n for n, p in model.module.named_parameters() if not torch.equal(p, before[n])]
        assert len(changed) > 100
    finally:
        dist.destroy_process_group()


def test_train_loader_pins_memory_on_cuda(tiny_root, tmp_path):
    from cadet_d2.data.mapper import MultiModalDatasetMapper
    from cadet_d2.data.stream import build_deterministic_train_loader

    cfg = registered_cfg(tiny_root, str(tmp_path / "o"), *CUDA)
    loader = build_deterministic_train_loader(cfg, MultiModalDatasetMapper(cfg, True))
    assert loader.pin_memory
    batch = next(iter(loader))
    assert batch and all(d["image"].is_pinned() for d in batch)


def test_evaluation_on_cuda_gives_finite_ap(tiny_root, tmp_path):
    from cadet_d2.engine import CadetTrainer

    cfg = registered_cfg(tiny_root, str(tmp_path / "o"), *CUDA, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    model = build_model(cfg)
    results = CadetTrainer.test(cfg, model)
    assert results and all(np.isfinite(r["bbox"]["AP"]) for r in results.values())


def test_export_matches_the_cuda_model(tmp_path):
    from cadet_d2.export import TorchRunner, build_export_model, export_model, load_runner, match_detections

    cpu = tiny_cfg(str(tmp_path), str(tmp_path / "o"), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    torch.manual_seed(0)
    model = build_export_model(cpu)
    export_model(cpu, "torchscript", str(tmp_path / "ts"), 64, 96, check=False, model=model)
    image = (torch.rand(1, 5, 64, 96, generator=torch.Generator().manual_seed(3)) * 255).numpy()
    exported = load_runner(str(tmp_path / "ts"), "torchscript")(image)
    on_cuda = TorchRunner(model.cuda())(image)
    r = match_detections(exported, on_cuda, min_iou=0.99)
    assert r["count_ref"] > 0 and r["count_ref"] == r["count_other"] and r["same"], r
    assert r["max_score_diff"] <= 1e-2, r  # TF32 / cuDNN vs the CPU trace


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_tracker_and_planner_agree_with_the_cuda_allocator(tmp_path, setting):
    from cadet_d2.bench.planner import measure_step_memory, setting_cfg

    cfg = setting_cfg(_cfg(tmp_path), setting)
    small = [measure_step_memory(cfg, b, 128, 160, compute=True) for b in (1, 2)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    measured = measure_step_memory(cfg, 4, 128, 160, compute=True)
    allocator_peak = torch.cuda.max_memory_allocated()
    from cadet_d2.bench.planner import fit_memory_model

    predicted = fit_memory_model(setting, small).predict(4)
    # the allocator rounds blocks up (512 B) and also saw the warm-up step and the model build
    assert measured["peak_bytes"] <= allocator_peak <= 1.25 * measured["peak_bytes"] + 64 * 2**20
    assert abs(predicted - measured["peak_bytes"]) <= 0.10 * measured["peak_bytes"]
