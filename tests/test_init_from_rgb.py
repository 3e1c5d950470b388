"""CADET.INIT.RGB_DETECTOR: a dual-stream detector started from a single-stream RGB detector."""
from __future__ import annotations

import logging

import pytest
import torch
from detectron2.modeling import build_model

from cadet_d2.data import register_from_config
from cadet_d2.engine import CadetTrainer
from cadet_d2.modeling.init_from_rgb import RGBInitError, kept_in_place
from conftest import make_tiny_root, tiny_cfg

RGB_STATS = ["MODEL.PIXEL_MEAN", "[74.0, 76.0, 75.0]", "MODEL.PIXEL_STD", "[65.0, 66.0, 68.0]"]


def rgb_cfg(tmp_path, *opts):
    return tiny_cfg(str(tmp_path / "data"), str(tmp_path / "out"), "CADET.INPUT.MODALITIES", "['rgb']",
                    *RGB_STATS, *opts)


def dual_cfg(tmp_path, path, fusion="concat", *opts):
    return tiny_cfg(str(tmp_path / "data"), str(tmp_path / "out"), "CADET.FUSION.NAME", fusion,
                    "CADET.FUSION.DEFAULT", fusion, "CADET.INIT.RGB_DETECTOR", path, *opts)


@pytest.fixture
def rgb_detector(tmp_path):
    """A random RGB detector (MiT-b0) saved like the trainer's checkpoints: {"model": ..., "iteration": ...}."""
    torch.manual_seed(3)
    model = build_model(rgb_cfg(tmp_path))
    path = str(tmp_path / "rgb.pth")
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    return model, path


def build_dual(cfg, seed=11):
    torch.manual_seed(seed)  # another seed than the RGB model: equal tensors come from the checkpoint
    return build_model(cfg)


def test_every_key_copied_adapted_or_new(tmp_path, rgb_detector, caplog):
    rgb_model, path = rgb_detector
    ckpt = rgb_model.state_dict()
    with caplog.at_level(logging.INFO, logger="cadet_d2"):
        model = build_dual(dual_cfg(tmp_path, path, "frm_ffm"))
    report, state = model.rgb_init_report, model.state_dict()
    # the report names every model key exactly once
    named = [*report["copied"], *report["adapted"], *report["new"]]
    assert sorted(named) == sorted(state) and len(named) == len(set(named))
    assert report["unused"] == []
    # every copied tensor equals the checkpoint's
    for dest, src in report["copied"].items():
        assert torch.equal(state[dest], ckpt[src]), dest
    single = [k for k in ckpt if k.startswith("backbone.bottom_up.stream.")]
    assert set(report["copied"]) == ({k.replace(".stream.", ".rgb_stream.") for k in single}
                                     | {k.replace(".stream.", ".aux_stream.") for k in single}
                                     | {k for k in ckpt if not k.startswith("backbone.bottom_up.")}) - set(report["adapted"])
    # the auxiliary stream's first patch embedding: mean of the RGB filters x 3 / 2 on both channels
    first = "backbone.bottom_up.aux_stream.patch_embed.proj.weight"
    assert report["adapted"] == {first: "backbone.bottom_up.stream.patch_embed.proj.weight"}
    rgb_w = ckpt["backbone.bottom_up.stream.patch_embed.proj.weight"]
    assert rgb_w.shape[1] == 3 and state[first].shape[1] == 2
    for c in range(2):
        torch.testing.assert_close(state[first][:, c], (rgb_w[:, 0] + rgb_w[:, 1] + rgb_w[:, 2]) / 3 * 1.5)
    # new: the fusion modules only
    assert report["new"] and all(k.startswith("backbone.bottom_up.fusions.") for k in report["new"])
    text = caplog.text
    assert f"{len(report['copied'])} tensors copied, 1 adapted, {len(report['new'])} new, 0 unused" in text
    assert first in text and report["new"][0] in text and "started as the RGB detector" in text


def test_concat_model_starts_as_the_rgb_detector(tmp_path, rgb_detector):
    rgb_model, path = rgb_detector
    model = build_dual(dual_cfg(tmp_path, path, "concat"))
    rgb_model.eval(), model.eval()
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 256, (5, 64, 80), generator=g).float()
    with torch.no_grad():
        dual_feats = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        rgb_feats = rgb_model.backbone(rgb_model.preprocess_image([{"image": image[:3]}]).tensor)
        assert dual_feats.keys() == rgb_feats.keys()
        for k in rgb_feats:
            torch.testing.assert_close(dual_feats[k], rgb_feats[k], rtol=0, atol=1e-5)
        dual_out = model([{"image": image, "height": 64, "width": 80}])[0]["instances"]
        rgb_out = rgb_model([{"image": image[:3], "height": 64, "width": 80}])[0]["instances"]
    assert len(rgb_out) > 0
    torch.testing.assert_close(dual_out.pred_boxes.tensor, rgb_out.pred_boxes.tensor, rtol=0, atol=1e-3)
    torch.testing.assert_close(dual_out.scores, rgb_out.scores, rtol=0, atol=1e-5)


def test_model_weights_take_precedence(tmp_path, rgb_detector):
    rgb_model, path = rgb_detector
    model = build_dual(dual_cfg(tmp_path, path, "concat", "MODEL.WEIGHTS", str(tmp_path / "other.pth")))
    assert model.rgb_init_report is None
    key = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(model.state_dict()[key], rgb_model.state_dict()[key])


def test_bad_uses_stop_with_the_file(tmp_path, rgb_detector):
    rgb_model, path = rgb_detector
    with pytest.raises(FileNotFoundError, match=f"CADET.INIT.RGB_DETECTOR {tmp_path / 'missing.pth'}: no such file"):
        build_dual(dual_cfg(tmp_path, str(tmp_path / "missing.pth")))
    with pytest.raises(IsADirectoryError, match=f"CADET.INIT.RGB_DETECTOR {tmp_path} is a folder"):
        build_dual(dual_cfg(tmp_path, str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="CADET.INIT.RGB_DETECTOR https://example.org/rgb.pth: no such file"):
        build_dual(dual_cfg(tmp_path, "https://example.org/rgb.pth"))  # a local file only, unlike MODEL.WEIGHTS
    with pytest.raises(RGBInitError, match="needs a dual-stream model"):
        build_model(rgb_cfg(tmp_path, "CADET.INIT.RGB_DETECTOR", path))
    dual_path = str(tmp_path / "dual.pth")  # keys of a dual-stream model
    torch.save({"model": {k.replace(".stream.", ".rgb_stream."): v for k, v in rgb_model.state_dict().items()}},
               dual_path)
    with pytest.raises(RGBInitError, match="not a single-stream detector"):
        build_dual(dual_cfg(tmp_path, dual_path))
    state = dict(rgb_model.state_dict())
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(4, 1024)  # 3 classes, not 1
    bad = str(tmp_path / "bad.pth")
    torch.save({"model": state}, bad)
    with pytest.raises(RGBInitError, match=r"bad\.pth.*cls_score.*NUM_CLASSES"):
        build_dual(dual_cfg(tmp_path, bad))
    del state["roi_heads.box_predictor.cls_score.weight"]
    torch.save({"model": state}, bad)
    with pytest.raises(RGBInitError, match="not in the file"):
        build_dual(dual_cfg(tmp_path, bad))


def test_trains_from_the_rgb_detector_and_resume_loads_the_run(tmp_path, rgb_detector, one_thread):
    # through the trainer, with a CSSA ablation option; --resume then loads the run's checkpoint
    rgb_model, path = rgb_detector
    root = make_tiny_root(str(tmp_path / "data"), n=4, n_test=1)
    cfg = tiny_cfg(root, str(tmp_path / "run"), "CADET.FUSION.NAME", "cssa", "CADET.FUSION.DEFAULT", "cssa",
                   "CADET.FUSION.CSSA.SPATIAL", "False", "CADET.INIT.RGB_DETECTOR", path, "DATASETS.TEST", "()",
                   "SOLVER.BASE_LR", "0.01")
    register_from_config(cfg)
    trainer = CadetTrainer(cfg)
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(trainer.model.state_dict()[key], rgb_model.state_dict()[key])
    # MiT-b0 channels 32, 64, 160, 256: ECA kernels 3, 3, 5, 5 per stream, no spatial conv
    assert trainer.model.rgb_init_report["new"] == [f"backbone.bottom_up.fusions.{i}.eca_{s}.conv.weight"
                                                    for i in range(4) for s in ("rgb", "aux")]
    assert count_fusion_params(trainer.model) == 2 * (3 + 3 + 5 + 5)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
    final = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert not torch.equal(final[key], rgb_model.state_dict()[key])
    again = CadetTrainer(cfg)
    again.resume_or_load(resume=True)
    assert all(torch.equal(v, final[k]) for k, v in again.model.state_dict().items())


def count_fusion_params(model) -> int:
    return sum(p.numel() for p in model.backbone.bottom_up.fusions.parameters())


@pytest.mark.parametrize("max_iter", [2, 3])
def test_freeze_keeps_the_copied_tensors_for_n_iterations(tmp_path, rgb_detector, one_thread, max_iter):
    """CADET.INIT.FREEZE_ITERS 2: after 2 iterations the RGB stream, FPN and heads still hold the
    detector's values while the auxiliary stream moved; one iteration later they move too."""
    rgb_model, path = rgb_detector
    root = make_tiny_root(str(tmp_path / "data"), n=4, n_test=1)
    cfg = tiny_cfg(root, str(tmp_path / f"run{max_iter}"), "CADET.FUSION.NAME", "concat", "CADET.FUSION.DEFAULT",
                   "concat", "CADET.INIT.RGB_DETECTOR", path, "CADET.INIT.FREEZE_ITERS", "2", "DATASETS.TEST", "()",
                   "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", str(max_iter), "SOLVER.WARMUP_ITERS", "0")
    register_from_config(cfg)
    trainer = CadetTrainer(cfg)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    final = trainer.model.state_dict()
    kept = kept_in_place(trainer.model.rgb_init_report)
    assert any(k.startswith("backbone.bottom_up.rgb_stream.") for k in kept)
    assert "roi_heads.box_predictor.cls_score.weight" in kept
    assert not any(k.startswith("backbone.bottom_up.aux_stream.") for k in kept)
    aux = [k for k in trainer.model.rgb_init_report["copied"] if k not in kept and k.endswith("weight")]
    assert any(not torch.equal(final[k], start[k]) for k in aux)  # the auxiliary stream trains
    moved = [k for k in kept if not torch.equal(final[k], rgb_model.state_dict()[_rgb_key(k)])]
    if max_iter == 2:
        assert moved == []
    else:
        assert len(moved) > len(kept) // 2


def _rgb_key(model_key: str) -> str:
    return model_key.replace("backbone.bottom_up.rgb_stream.", "backbone.bottom_up.stream.")


def test_freeze_without_an_rgb_detector_stops(tmp_path):
    with pytest.raises(ValueError, match="CADET.INIT.FREEZE_ITERS 5: .*only with CADET.INIT.RGB_DETECTOR"):
        tiny_cfg(str(tmp_path / "data"), str(tmp_path / "out"), "CADET.INIT.FREEZE_ITERS", "5")
