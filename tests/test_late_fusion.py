"""LateFusionRCNN (cadet_d2/modeling/late_fusion.py): tiny MiT-b0 branches on 64 px images."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from cadet_d2.modeling import CadetRCNN, LateFusionRCNN
from cadet_d2.modeling.late_fusion import branch_cfg
from conftest import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "CADET.BACKBONE.DROP_PATH_RATE", "0.0"]
LATE = ["MODEL.META_ARCHITECTURE", "LateFusionRCNN", *TINY]


def late_cfg(tmp_path, *opts):
    return tiny_cfg(str(tmp_path / "data"), str(tmp_path / "out"), *LATE, *opts)


def batch(n=2, h=64, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[8.0, 10.0, 40.0, 50.0]]))
        inst.gt_classes = torch.tensor([0])
        out.append({"image": torch.randint(0, 256, (5, h, w), generator=g).float(), "height": h, "width": w,
                    "instances": inst})
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model(late_cfg(tmp_path_factory.mktemp("late")))
    return m


def test_built_from_config(model):
    assert isinstance(model, LateFusionRCNN)
    assert list(model.branches) == ["rgb", "thermal_event"]
    assert model.channels == {"rgb": [0, 1, 2], "thermal_event": [3, 4]}
    for name, c in (("rgb", 3), ("thermal_event", 2)):
        b = model.branches[name]
        assert isinstance(b, CadetRCNN) and b.pixel_mean.numel() == c
        assert b.backbone.bottom_up.stream is not None  # single-stream MiT
    assert model.branches["thermal_event"].pixel_mean.flatten().tolist() == [92.0, 3.0]
    assert model.merge_name == "proben"


def test_training_step_has_both_branches_losses(model, one_thread):
    model.train()
    with EventStorage(0):
        losses = model(batch())
    for name in ("rgb", "thermal_event"):
        for k in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"):
            assert math.isfinite(float(losses[f"{name}/{k}"])), (name, k)
    assert len(losses) == 8
    sum(losses.values()).backward()
    for name, b in model.branches.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.backbone.parameters()), name
    model.zero_grad()


@pytest.mark.parametrize("dropped, sizes", [
    ([[0, 1, 2], []], {"rgb": 1, "thermal_event": 2}),  # image 0 lost RGB: the RGB branch trains on image 1
    ([[3], [3, 4]], {"rgb": 2, "thermal_event": 1}),  # image 0 lost only thermal: its event channel is seen
    ([[0, 1, 2], [0, 1, 2]], {"rgb": 2, "thermal_event": 2}),  # RGB lost everywhere: losses times 0
])
def test_a_branch_learns_only_from_images_it_sees(model, one_thread, dropped, sizes):
    """Modality dropout's ``dropped_channels``: a branch whose every channel was blanked in an
    image leaves that image out; with none left it runs on the batch, losses times 0."""
    model.train()
    seen: dict[str, int] = {}
    hooks = [b.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, len(args[0])))
             for name, b in model.branches.items()]
    data = batch()
    for x, channels in zip(data, dropped):
        if channels:
            x["dropped_channels"] = channels
    try:
        with EventStorage(0):
            losses = model(data)
    finally:
        for h in hooks:
            h.remove()
    assert seen == sizes and len(losses) == 8
    blind = all(not model.sees(x, "rgb") for x in data)
    assert all((float(v) == 0.0) == (blind and k.startswith("rgb/")) for k, v in losses.items()
               if "loss_box_reg" not in k), losses
    sum(losses.values()).backward()
    rgb_grad = sum(float(p.grad.abs().sum()) for p in model.branches["rgb"].parameters() if p.grad is not None)
    assert (rgb_grad == 0.0) == blind, rgb_grad
    model.zero_grad()


@pytest.mark.parametrize("merge", ["proben", "nms"])
def test_inference_merged_count_at_most_sum(tmp_path, merge, one_thread):
    torch.manual_seed(0)
    m = build_model(late_cfg(tmp_path, "CADET.LATE.MERGE", merge)).eval()
    inputs = [dict(x, height=128, width=160) for x in batch()]  # postprocessed to the original size
    with torch.no_grad():
        out = m(inputs)
        per_branch = [b(m.branch_inputs(inputs, n)) for n, b in m.branches.items()]
    assert len(out) == 2
    for i, r in enumerate(out):
        inst = r["instances"]
        assert inst.image_size == (128, 160)
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        n_sum = sum(len(p[i]["instances"]) for p in per_branch)
        assert 0 < len(inst) <= min(n_sum, 100)
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
        assert (inst.pred_boxes.tensor[:, 2] <= 160 + 1e-3).all()


def test_missing_modality_still_detects(model, one_thread):
    model.eval()
    inputs = batch(1)
    inputs[0]["image"][3:] = 0  # thermal and event lost
    with torch.no_grad():
        out = model(inputs)
    assert len(out[0]["instances"]) > 0


def test_assembled_from_two_single_modality_checkpoints(tmp_path, caplog):
    base = late_cfg(tmp_path)
    paths = []
    for i, group in enumerate(["rgb", "thermal+event"]):
        torch.manual_seed(10 + i)
        single = build_model(branch_cfg(base, group)[0])
        p = str(tmp_path / f"{i}.pth")
        torch.save({"model": single.state_dict(), "iteration": 5}, p)
        paths.append((p, single.state_dict()))
    torch.manual_seed(99)
    m = build_model(late_cfg(tmp_path, "CADET.LATE.WEIGHTS", str([p for p, _ in paths])))
    for name, (_, ckpt) in zip(["rgb", "thermal_event"], paths):
        state = m.branches[name].state_dict()
        assert sorted(state) == sorted(ckpt)
        for k, v in ckpt.items():
            assert torch.equal(state[k], v), (name, k)
        assert m.weights_report[name]["missing"] == [] and m.weights_report[name]["unexpected"] == []
        assert sorted(m.weights_report[name]["loaded"]) == sorted(ckpt)


def test_checkpoint_of_other_branch_refused(tmp_path):
    base = late_cfg(tmp_path)
    torch.manual_seed(0)
    rgb = build_model(branch_cfg(base, "rgb")[0])
    p = str(tmp_path / "rgb.pth")
    torch.save({"model": rgb.state_dict()}, p)
    with pytest.raises(ValueError, match=r"CADET.LATE.WEIGHTS: .*rgb.pth does not fit"):
        build_model(late_cfg(tmp_path, "CADET.LATE.WEIGHTS", str(["", p])))  # rgb weights into thermal+event


@pytest.mark.parametrize("branches, message", [
    (["rgb", "thermal"], r"CADET.LATE.BRANCHES .* leaves out \['event'\]"),
    (["rgb", "rgb+thermal+event"], r"CADET.LATE.BRANCHES: 'rgb' is in two entries"),
    (["rgb", "thermal+evnt"], r"CADET.LATE.BRANCHES entry 'thermal\+evnt' names 'evnt'"),
    (["rgb+thermal+event"], r"CADET.LATE.BRANCHES .* needs at least two entries"),
])
def test_bad_branches_named(tmp_path, branches, message):
    with pytest.raises(ValueError, match=message):
        late_cfg(tmp_path, "CADET.LATE.BRANCHES", str(branches))


def test_bad_weights_count_and_merge_named(tmp_path):
    with pytest.raises(ValueError, match="CADET.LATE.WEIGHTS has 1 entries"):
        late_cfg(tmp_path, "CADET.LATE.WEIGHTS", "['a.pth']")
    with pytest.raises(ValueError, match="CADET.LATE.MERGE"):
        late_cfg(tmp_path, "CADET.LATE.MERGE", "mean")


def test_train_net_trains_and_evaluates_with_sensor_failure(tiny_root, tmp_path):
    """configs/late through tools/train_net.py: both branches' losses logged, clean and
    sensor-failure evaluation written."""
    out = str(tmp_path / "run")
    opts = ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
            "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", *TINY, "CADET.DATA.ROOT", tiny_root,
            "DATASETS.TEST", "('synth_daytest1',)", "CADET.TEST.DROP_MODALITIES", "['thermal+event']",
            "OUTPUT_DIR", out]
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                        "configs/late/late_proben_b0.yaml", *opts], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        logged = [json.loads(line) for line in f if line.strip()]
    keys = set().union(*logged)
    assert {"rgb/loss_cls", "thermal_event/loss_cls", "rgb/loss_rpn_loc", "thermal_event/loss_box_reg"} <= keys
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert "synth_daytest1" in metrics["datasets"]
    names = [c["name"] for c in metrics["conditions"]]  # clean, then thermal+event failed
    assert len(names) == 2 and "thermal+event" in names[1], names
    assert all("synth_daytest1" in c["datasets"] for c in metrics["conditions"])


@pytest.mark.parametrize("merge", ["nms", "proben"])
def test_onnx_export_matches_pytorch(tmp_path, merge, one_thread):
    """LateFusionRCNN exports to ONNX with either merge and gives PyTorch's detections (export_model's
    check: same count, IoU >= 0.99, scores within 1e-3, on two image sizes), groups formed included."""
    import onnxruntime  # noqa: F401  (pinned: a failed import fails the test)
    from cadet_d2.export import export_model
    from cadet_d2.export.runtime import OnnxRunner
    from cadet_d2.export.tracing import example_image

    cfg = late_cfg(tmp_path, "CADET.LATE.MERGE", merge)
    meta = export_model(cfg, "onnx", str(tmp_path / "onnx"), 64, 80, check=True)
    checks = meta["exports"]["onnx"]["checks"]
    assert len(checks) == 2 and all(c["same"] and c["count_ref"] > 0 for c in checks), checks
    # the example's branches overlap: the merge removed or fused some of their detections
    torch.manual_seed(0)  # the weights export_model built (no MODEL.WEIGHTS: torch seed 0)
    model = build_model(cfg).eval()
    image = example_image(5, 64, 80)
    with torch.no_grad():
        per_branch = sum(len(b.inference([{"image": image[0, model.channels[n]]}], do_postprocess=False)[0])
                         for n, b in model.branches.items())
    assert checks[0]["count_ref"] < per_branch, (checks[0], per_branch)
    onnx = OnnxRunner(str(tmp_path / "onnx" / "model.onnx"))(image.numpy())
    assert len(onnx.scores) == checks[0]["count_ref"]


def test_demo_single_modality_configs_fit_the_late_branches():
    """configs/demo/demo_rgb.yaml and demo_thermal_event.yaml build exactly the branches of
    configs/late/late_proben_b0.yaml (same keys and shapes): their checkpoints can be assembled."""
    from cadet_d2.engine import load_config

    late = build_model(load_config(os.path.join(REPO, "configs/late/late_proben_b0.yaml"), ["MODEL.DEVICE", "cpu"]))
    for name, path in (("rgb", "demo_rgb.yaml"), ("thermal_event", "demo_thermal_event.yaml")):
        cfg = load_config(os.path.join(REPO, "configs/demo", path), ["MODEL.DEVICE", "cpu"])
        single = build_model(cfg).state_dict()
        branch = late.branches[name].state_dict()
        assert {k: tuple(v.shape) for k, v in single.items()} == {k: tuple(v.shape) for k, v in branch.items()}
        assert late.branches[name].pixel_mean.flatten().tolist() == list(cfg.MODEL.PIXEL_MEAN)
