"""Pictures: modality panels with boxes, fusion heat maps, ground truth of a data set, tools."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from cadet_d2.inference import draw_dataset
from cadet_d2.inference.ground_truth import augmented_ground_truth, stored_ground_truth
from cadet_d2.inference.fusion_maps import switch_rates
from cadet_d2.inference.visualize import (
    GT_COLOR, PRED_COLOR, TITLE_PX, box_labels, fusion_panels, modality_panels, save_detections,
)

from conftest import make_tiny_root, tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLICES = {"rgb": slice(0, 3), "thermal": slice(3, 4), "event": slice(4, 5)}
FAST = ["MODEL.RPN.POST_NMS_TOPK_TEST", "50", "TEST.DETECTIONS_PER_IMAGE", "5", "CADET.DATA.NAME", "vistiny"]


def read_png(path: str) -> np.ndarray:
    """(H, W, 3) uint8."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def rgb255(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])


def has_color(png: np.ndarray, hex_color: str, tol: int = 12) -> bool:
    return bool((np.abs(png.astype(int) - rgb255(hex_color)).max(axis=-1) <= tol).any())


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return make_tiny_root(str(tmp_path_factory.mktemp("vis") / "data"), n=4, n_test=3)


def build(root: str, out: str, *opts: str):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = tiny_cfg(root, out, *FAST, *opts)
    return cfg, build_model(cfg).eval()


@pytest.fixture(scope="module")
def cssa(root, tmp_path_factory):
    return build(root, str(tmp_path_factory.mktemp("o")), "MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone",
                 "CADET.FUSION.NAME", "cssa")


def test_modality_panels_follow_the_configured_modalities():
    image = np.random.default_rng(0).integers(0, 255, size=(20, 30, 5)).astype(np.float32)
    panels = modality_panels(image, SLICES)
    assert [(p.title, p.cmap) for p in panels] == [("RGB", None), ("thermal", "inferno"), ("event", "gray")]
    np.testing.assert_allclose(panels[0].array, image[:, :, :3] / 255)
    assert panels[1].array.shape == (20, 30) and panels[1].array.min() == 0 and panels[1].array.max() == 1
    only = modality_panels(image[:, :, 3:], {"thermal": slice(0, 1), "event": slice(1, 2)})
    assert [p.title for p in only] == ["thermal", "event"]
    np.testing.assert_allclose(only[1].array, panels[2].array)


def test_labels():
    assert box_labels([0, 1], [0.876, 0.5], ["person", "car"]) == ["person 0.88", "car 0.50"]
    assert box_labels([1, 7], None, ["person", "car"]) == ["car", "7"]


def test_picture_grows_with_panels_and_boxes_are_on_each(tmp_path):
    """A black 60x80 image: panels 320 px wide (scaled 4x), 240 px high + the title strip."""
    image = np.zeros((60, 80, 5), np.float32)
    boxes = np.array([[10, 10, 50, 40]], np.float32)
    all3, rgb = str(tmp_path / "all.png"), str(tmp_path / "rgb.png")
    save_detections(all3, image, SLICES, boxes, [0], [0.9], ["person"])
    save_detections(rgb, image[:, :, :3], {"rgb": slice(0, 3)}, boxes, [0], [0.9], ["person"])
    a, b = read_png(all3), read_png(rgb)
    assert abs(a.shape[1] - 3 * 320) <= 1 and abs(b.shape[1] - 320) <= 1
    assert abs(a.shape[0] - (240 + TITLE_PX)) <= 1 and abs(b.shape[0] - a.shape[0]) <= 1
    for k in range(3):  # the box (at 4x: x 40-200, y 40-160 under the title) in every panel
        panel = a[TITLE_PX:, k * 320:(k + 1) * 320]
        assert has_color(panel[30:170, 30:210], PRED_COLOR), k
        assert not has_color(panel[:30, 220:], PRED_COLOR) and not has_color(panel, GT_COLOR), k
    gt = str(tmp_path / "gt.png")
    save_detections(gt, image, SLICES, boxes, [0], None, ["person"])
    g = read_png(gt)
    assert has_color(g, GT_COLOR) and not has_color(g, PRED_COLOR)
    assert sorted(os.listdir(tmp_path)) == ["all.png", "gt.png", "rgb.png"]  # no temporary file left


def test_fusion_panels_of_cssa_with_switch_rates(cssa):
    cfg, model = cssa
    image = torch.rand(5, 64, 85, generator=torch.Generator().manual_seed(0)) * 255
    panels = fusion_panels(model, image, (48, 64))
    assert [p.title.splitlines()[0] for p in panels] == [f"stage {s} cssa attention" for s in (1, 2, 3, 4)]
    rates = switch_rates(model)  # of the forward pass that made the maps
    assert set(rates) == {1, 2, 3, 4}
    for s, p in zip((1, 2, 3, 4), panels):
        assert p.title.splitlines()[1] == f"switched R<-X {rates[s][0]:.0%}, X<-R {rates[s][1]:.0%}"
        assert p.array.shape == (48, 64) and 0 <= p.array.min() and p.array.max() <= 1 and p.array.std() > 0


def test_switch_rates_read_whatever_the_module_keeps(cssa):
    _, model = cssa
    fusions = model.backbone.bottom_up.fusions
    saved = [getattr(f, "last_switch_rates", None) for f in fusions]
    try:
        for f in fusions:
            f.last_switch_rates = None
        fusions[1].last_switch_rates = (0.25, torch.tensor(0.5))
        assert switch_rates(model) == {2: (0.25, 0.5)}
    finally:
        for f, v in zip(fusions, saved):
            f.last_switch_rates = v


def test_prediction_picture_has_fusion_rows_for_cssa_only(cssa, root, tmp_path):
    from cadet_d2.inference import BatchPredictor, collect_inputs
    from cadet_d2.inference.run import save_prediction_picture

    file = collect_inputs([os.path.join(root, "images")])[0]
    sizes = {}
    for name, (cfg, model) in {"cssa": cssa, "early": build(root, str(tmp_path), "MODEL.BACKBONE.NAME",
                                                            "build_mit_fpn_backbone")}.items():
        predictor = BatchPredictor(cfg, model=model)
        (_, mapped, pred), = next(predictor.iter_batches([file]))
        path = str(tmp_path / f"{name}.png")
        save_prediction_picture(path, cfg, pred, ["object"], mapped, predictor.mapper, model)
        sizes[name] = read_png(path).shape[:2]
    # 48x64 -> 320x240 panels: early fusion 1 row of 3; cssa 1 row of 3 + 4 maps -> 2 rows of 4
    assert abs(sizes["early"][1] - 960) <= 1 and abs(sizes["early"][0] - (240 + TITLE_PX)) <= 1
    assert abs(sizes["cssa"][1] - 1280) <= 1 and abs(sizes["cssa"][0] - 2 * (240 + TITLE_PX)) <= 1


def test_ground_truth_of_a_registered_dataset(cssa, root, tmp_path):
    cfg, _ = cssa
    written = draw_dataset(cfg, "vistiny_daytest1", str(tmp_path / "gt"), num=2)
    assert [os.path.basename(p) for p in written] == ["daytest10000.png", "daytest10001.png"]
    png = read_png(written[0])
    assert has_color(png, GT_COLOR) and not has_color(png, PRED_COLOR)
    assert len(draw_dataset(cfg, "vistiny_daytest1", str(tmp_path / "all"), num=0)) == 3
    with pytest.raises(KeyError, match="'vistiny_nosuch' is not registered.*vistiny_daytest1"):
        draw_dataset(cfg, "vistiny_nosuch", str(tmp_path / "x"))


def test_train_aug_moves_the_boxes_with_the_image(cssa):
    """The training mapper resizes 48x64 to 64x85 and may flip: the boxes follow."""
    from detectron2.data import DatasetCatalog

    from cadet_d2.data import MultiModalDatasetMapper, register_from_config

    cfg, _ = cssa
    register_from_config(cfg)
    mapper = MultiModalDatasetMapper(cfg, is_train=True)
    np.random.seed(0)
    for d in DatasetCatalog.get("vistiny_train"):
        image, boxes, classes = stored_ground_truth(cfg, d)
        aug, aug_boxes, aug_classes = augmented_ground_truth(mapper, d)
        assert aug.shape == (64, 85, 5) and image.shape == (48, 64, 5)
        sx, sy = 85 / 64, 64 / 48
        scaled = boxes * [sx, sy, sx, sy]
        flipped = scaled[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [85, 0, 85, 0]
        assert np.allclose(aug_boxes, scaled, atol=0.5) or np.allclose(aug_boxes, flipped, atol=0.5)
        np.testing.assert_array_equal(aug_classes, classes)
        # the warm box of thermal (230) sits inside the transformed box
        x0, y0, x1, y1 = aug_boxes[0].round().astype(int)
        assert aug[y0 + 2:y1 - 2, x0 + 2:x1 - 2, 3].mean() > 200 > aug[:, :, 3].mean()


def test_tools_end_to_end(root, tmp_path):
    def tool(name):
        spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(REPO, "tools", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    opts = ["CADET.DATA.ROOT", root, "CADET.BACKBONE.SIZE", "b0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MAX_SIZE_TRAIN", "96", "MODEL.DEVICE", "cpu", *FAST]
    base = os.path.join(REPO, "configs", "Base-CADET.yaml")
    written = tool("visualize_data").main(["--config-file", base, "--dataset", "vistiny_train", "--output",
                                           str(tmp_path / "aug"), "--num", "2", "--train-aug", *opts])
    assert sorted(os.listdir(tmp_path / "aug")) == sorted(os.path.basename(p) for p in written)
    assert len(written) == 2 and all(p.endswith("_aug.png") for p in written)
    assert has_color(read_png(written[0]), GT_COLOR)
    out = tmp_path / "pred"
    summary = tool("predict").main(["--config-file", base, "--input", os.path.join(root, "daytest1", "images"),
                                    "--output", str(out), "--vis", "--score-thresh", "0", "--no-progress", *opts,
                                    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "INPUT.MIN_SIZE_TEST", "64",
                                    "INPUT.MAX_SIZE_TEST", "96"])
    assert summary["images"] == 3 and summary["pictures"] == 3 and summary["detections"] > 0
    assert len(os.listdir(out / "vis")) == 3 and has_color(read_png(str(out / "vis" / "daytest10000.png")), PRED_COLOR)
