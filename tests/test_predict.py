"""BatchPredictor, COCO-style results and tools/predict.py on a tiny dual-stream (CSSA) model."""
from __future__ import annotations

import importlib.util
import json
import logging
import os

import numpy as np
import pytest
import torch

from cadet_d2.data import DataError, MultiModalDatasetMapper, read_image_size
from cadet_d2.inference import BatchPredictor, collect_inputs, output_names, to_coco_results, write_coco_results

from conftest import make_tiny_root, run_demo_tool, tiny_cfg, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "TEST.DETECTIONS_PER_IMAGE", "20"]
CSSA = ["MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone", "CADET.FUSION.NAME", "cssa", *FAST]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A tiny root (48x64 images) plus a folder of images of other sizes."""
    base = tmp_path_factory.mktemp("predict")
    root = make_tiny_root(str(base / "data"), n=3, test_sets=())
    rng = np.random.default_rng(5)
    other = str(base / "other")
    for name, (h, w) in {"big": (96, 128), "thin": (30, 100), "big2": (96, 128)}.items():
        write_image(os.path.join(other, name + ".npy"), rng.integers(0, 255, size=(h, w, 5), dtype=np.uint8))
    return {"root": root, "images": os.path.join(root, "images"), "other": other, "base": str(base)}


@pytest.fixture(scope="module")
def cfg(data):
    return tiny_cfg(data["root"], os.path.join(data["base"], "out"), *CSSA)


@pytest.fixture(scope="module")
def model(cfg):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_model(cfg).eval()
    torch.set_num_threads(n)


def test_boxes_come_back_in_original_coordinates(cfg, model, data):
    """A 96x128 file is resized to 64x85 for the model; its boxes come back in 96x128 pixels."""
    path = os.path.join(data["other"], "big.npy")
    pred = BatchPredictor(cfg, model=model)([path])[0]
    assert (pred.height, pred.width) == (96, 128) and len(pred) > 0
    assert (pred.boxes[:, [0, 2]] >= 0).all() and (pred.boxes[:, [0, 2]] <= 128).all()
    assert (pred.boxes[:, [1, 3]] >= 0).all() and (pred.boxes[:, [1, 3]] <= 96).all()
    mapped = MultiModalDatasetMapper(cfg, is_train=False)({"file_name": path})["image"]
    assert tuple(mapped.shape[1:]) == (64, 85)
    with torch.no_grad():  # the model itself, without height/width: boxes on the 64x85 input
        inst = model([{"image": mapped}])[0]["instances"]
    resized = inst.pred_boxes.tensor.numpy()
    assert resized[:, [0, 2]].max() <= 85 and pred.boxes[:, [0, 2]].max() > 85
    expected = np.clip(resized * np.array([128 / 85, 96 / 64, 128 / 85, 96 / 64]), 0, [128, 96, 128, 96])
    np.testing.assert_allclose(pred.boxes, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(pred.scores, inst.scores.numpy(), atol=1e-6)
    np.testing.assert_array_equal(pred.classes, inst.pred_classes.numpy())


def test_score_threshold_filters_after_inference(cfg, model, data):
    files = collect_inputs([data["images"]])
    full = BatchPredictor(cfg, model=model)(files)
    t = float(np.median(np.concatenate([p.scores for p in full])))
    kept = BatchPredictor(cfg, score_thresh=t, model=model)(files)
    assert sum(map(len, kept)) < sum(map(len, full))
    for a, b in zip(full, kept):
        keep = a.scores >= t
        assert (b.scores >= t).all()
        np.testing.assert_array_equal(b.boxes, a.boxes[keep])
        np.testing.assert_array_equal(b.classes, a.classes[keep])
    with pytest.raises(ValueError, match="score threshold"):
        BatchPredictor(cfg, score_thresh=1.5, model=model)


def test_batch_size_does_not_change_detections(cfg, model, data):
    """Mixed sizes, interleaved: batches hold one size each (padding a 30x100 image to the 64x96
    of the others changes its scores by ~0.03), so results and order match batch size 1."""
    files = collect_inputs([data["images"], data["other"]])
    files = files[::2] + files[1::2]
    three = BatchPredictor(cfg, batch_size=3, model=model)
    batches = three.batches([three.record(f) for f in files])
    assert sorted(i for b in batches for i in b) == list(range(len(files)))
    assert max(map(len, batches)) == 3 and len(batches) < len(files)
    for b in batches:
        assert len({read_image_size(files[i], 5) for i in b}) == 1
    one = BatchPredictor(cfg, batch_size=1, model=model)(files)
    assert len(one) == len(files) and all(len(a) > 0 for a in one)
    for a, b, f in zip(one, three(files), files, strict=True):
        assert a.file_name == b.file_name == f
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_array_equal(a.classes, b.classes)


def test_coco_results_schema_and_round_trip(cfg, model, data, tmp_path):
    from pycocotools.coco import COCO

    files = collect_inputs([data["other"]])
    preds = BatchPredictor(cfg, model=model)(files)
    assert len(preds) == len(files) == 3 and all(len(p) > 0 for p in preds)  # else the checks below prove nothing
    path = str(tmp_path / "res" / "predictions.json")
    written = write_coco_results(path, preds, ["person"])
    assert os.listdir(tmp_path / "res") == ["predictions.json"]  # no temporary file left
    with open(path) as f:
        results = json.load(f)
    assert results == written == to_coco_results(preds, ["person"])
    assert len(results) == sum(map(len, preds))
    for r in results:
        assert set(r) == {"image_id", "file_name", "category_id", "bbox", "score", "category_name"}
        assert r["file_name"] == files[r["image_id"]] and r["category_id"] == 1 and r["category_name"] == "person"
    for i, p in enumerate(preds):  # back to XYXY in order
        mine = [r for r in results if r["image_id"] == i]
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]).reshape(-1, 4)
        np.testing.assert_allclose(xyxy, p.boxes, atol=1e-4)
        np.testing.assert_allclose([r["score"] for r in mine], p.scores, atol=1e-6)
    gt = COCO()  # pycocotools accepts the file as detection results
    gt.dataset = {"images": [{"id": i, "height": p.height, "width": p.width} for i, p in enumerate(preds)],
                  "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    gt.createIndex()
    assert len(gt.loadRes(path).getAnnIds()) == len(results)


def test_inputs_missing_empty_and_bad_files_are_named(cfg, model, data, tmp_path):
    missing = str(tmp_path / "nope.npy")
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        collect_inputs([data["images"], missing])
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    np.save(empty / "sub" / "x.npy", np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match=r"empty: folder holds no \.npy image.*--recursive"):
        collect_inputs([str(empty)])
    assert collect_inputs([str(empty)], recursive=True) == [str(empty / "sub" / "x.npy")]
    with pytest.raises(ValueError, match=r"data root\? give .*images"):
        collect_inputs([data["root"]])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="a.txt: not a .npy"):
        collect_inputs([str(tmp_path / "a.txt")])
    assert len(collect_inputs([data["images"], data["images"]])) == 3  # each file once
    bad = str(tmp_path / "bad.npy")
    np.save(bad, np.zeros((8, 8, 5), np.float32))
    with pytest.raises(DataError, match="bad.npy: dtype is float32"):
        BatchPredictor(cfg, model=model)([bad])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        BatchPredictor(tiny_cfg(data["root"], str(tmp_path), *CSSA, "MODEL.WEIGHTS", str(tmp_path / "missing.pth")))


def test_output_names_are_distinct():
    assert output_names(["d/a.npy", "d/b.npy"]) == ["a", "b"]
    assert output_names(["r/day/a.npy", "r/night/a.npy", "r/b.npy"]) == ["day__a", "night__a", "b"]


def test_predict_tool_end_to_end(cfg, model, data, tmp_path):
    weights = str(tmp_path / "w.pth")
    torch.save({"model": model.state_dict()}, weights)
    out = str(tmp_path / "out")
    summary = load_tool("predict").main([
        "--config-file", os.path.join(REPO, "configs", "Base-CADET.yaml"), "--input", data["images"],
        os.path.join(data["other"], "thin.npy"), "--output", out, "--vis-fusion", "--score-thresh", "0.0",
        "--batch-size", "2", "--device", "cpu", "--no-progress",
        *[str(x) for x in cfg_opts(data, tmp_path)], "MODEL.WEIGHTS", weights])
    files = collect_inputs([data["images"], os.path.join(data["other"], "thin.npy")])
    with open(os.path.join(out, "predictions.json")) as f:
        results = json.load(f)
    # the weights were loaded: same detections as the model they came from
    assert results == to_coco_results(BatchPredictor(cfg, batch_size=2, model=model)(files), ["object"])
    assert summary["images"] == 4 and summary["detections"] == len(results) > 0
    assert sorted(os.listdir(os.path.join(out, "vis"))) == ["img0000.png", "img0001.png", "img0002.png", "thin.png"]


def cfg_opts(data, tmp_path) -> list[str]:
    """The tiny config's overrides (``tiny_cfg``) as command-line KEY VALUE pairs."""
    return ["CADET.DATA.ROOT", data["root"], "CADET.BACKBONE.SIZE", "b0", "INPUT.MIN_SIZE_TEST", "64",
            "INPUT.MAX_SIZE_TEST", "96", "OUTPUT_DIR", str(tmp_path), *CSSA]


def test_predict_tool_says_when_input_swallowed_a_config_key(data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_tool("predict").main(["--config-file", os.path.join(REPO, "configs", "Base-CADET.yaml"), "--output",
                                   str(tmp_path), "--input", data["images"], "MODEL.WEIGHTS", "w.pth"])
    assert "--input took 'MODEL.WEIGHTS'" in capsys.readouterr().err


class _Records(logging.Handler):
    """Keeps the records of a logger (Detectron2's setup_logger stops them reaching the root)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_predict_tool_warns_without_weights(data, tmp_path):
    handler = _Records()
    logger = logging.getLogger("cadet_d2")
    logger.addHandler(handler)
    try:
        summary = load_tool("predict").main([
            "--config-file", os.path.join(REPO, "configs", "Base-CADET.yaml"), "--input",
            os.path.join(data["other"], "thin.npy"), "--output", str(tmp_path / "out"), "--device", "cpu",
            "--no-progress", *cfg_opts(data, tmp_path)])
    finally:
        logger.removeHandler(handler)
    assert summary["images"] == 1
    warnings = [r.getMessage() for r in handler.records if r.levelno == logging.WARNING]
    assert "[cadet] MODEL.WEIGHTS is empty: the model is untrained (random weights)" in warnings


@pytest.mark.parametrize("tool, args, opts, message", [
    ("export", ["--output", "{tmp}/x"], ["SOLVER.FOO", "1"], "error: command line: unknown config key 'SOLVER.FOO'"),
    ("fusion_maps", ["--image", "{tmp}/a.npy", "--output", "{tmp}/a.png"], ["SOLVER.FOO", "1"],
     "error: command line: unknown config key 'SOLVER.FOO'"),
    ("count_params", ["--no-flops"], ["CADET.BACKBONE.SIZE", "b9"], "error: CADET.BACKBONE.SIZE = 'b9' is not allowed"),
    ("benchmark", ["--mode", "infer"], ["SOLVER.FOO", "1"], "error: command line: unknown config key 'SOLVER.FOO'"),
    ("visualize_data", ["--dataset", "nope", "--output", "{tmp}/v"], ["CADET.DATA.ROOT", "{tmp}/data"],
     "error: data set 'nope' is not registered"),
    ("export", ["--output", "{tmp}/x"], ["MODEL.WEIGHTS", "{tmp}/bad.pth"], "error: {tmp}/bad.pth: corrupt or truncated"),
    ("predict", ["--input", "{tmp}", "--output", "{tmp}/p"], ["MODEL.WEIGHTS", "{tmp}/bad.pth"],
     "error: {tmp}/bad.pth: corrupt or truncated"),
])
def test_tools_report_user_mistakes_without_a_traceback(tmp_path, tool, args, opts, message):
    (tmp_path / "bad.pth").write_bytes(b"PK\x03\x04 not a whole zip archive")
    np.save(tmp_path / "a.npy", np.zeros((48, 64, 5), np.uint8))
    make_tiny_root(str(tmp_path / "data"))  # a data root of the test's own, not the checkout's datasets/
    r = run_demo_tool(tool, tmp_path, *args, *opts)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert message.replace("{tmp}", str(tmp_path)) in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
