"""Export of tiny dual-stream detectors to ONNX and TorchScript: same detections as PyTorch.

The reference is the PyTorch model itself (``model.inference(do_postprocess=False)``), never
the export wrapper: a wrong trace (a frozen size, a dropped branch) changes the count or the
boxes. Images: the tiny data root's files through the test mapper (48 x 64 -> 64 x 85, not the
64 x 96 export size) and random images of other sizes, so the dynamic H, W are exercised.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import make_tiny_root, tiny_cfg

from cadet_d2.layout import file_channel_indices
from cadet_d2.data import MultiModalDatasetMapper
from cadet_d2.export import (
    META_FILE, Detections, ExportMismatchError, OnnxRunner, TorchRunner, build_export_model,
    export_model, load_runner, match_detections, preprocess, read_meta,
)
from cadet_d2.export.exporter import verify

FUSIONS = ("frm_ffm", "cssa", "gaff")
EXPORT_HW = (64, 96)
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(HERE, "configs", "Base-CADET.yaml")


def fusion_cfg(root: str, out: str, fusion: str, *opts: str):
    return tiny_cfg(root, out, "MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone", "CADET.FUSION.NAME", fusion,
                    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *opts)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return make_tiny_root(str(tmp_path_factory.mktemp("export_data")), n=4, n_test=2)


@pytest.fixture(scope="module")
def test_inputs(data_root) -> list[np.ndarray]:
    """Model inputs (1, 5, H, W): two data files through the test mapper, two random images."""
    cfg = fusion_cfg(data_root, "unused", "frm_ffm")
    mapper = MultiModalDatasetMapper(cfg, is_train=False)
    files = sorted(os.listdir(os.path.join(data_root, "images")))[:2]
    out = [mapper({"file_name": os.path.join(data_root, "images", f)})["image"][None].numpy() for f in files]
    g = torch.Generator().manual_seed(7)
    out += [(torch.rand(1, 5, h, w, generator=g) * 255).numpy() for h, w in ((96, 64), (72, 100))]
    assert {x.shape[-2:] for x in out} >= {(64, 85), (96, 64)}
    return out


@pytest.fixture(scope="module", params=FUSIONS)
def exported(request, data_root, tmp_path_factory):
    """(cfg, model, export dir) with model.onnx and model.ts of a seeded tiny model."""
    fusion = request.param
    out = str(tmp_path_factory.mktemp(f"export_{fusion}"))
    cfg = fusion_cfg(data_root, out, fusion)
    torch.manual_seed(0)
    model = build_export_model(cfg)
    with torch.no_grad():  # BatchNorm running stats away from (0, 1), so a wrong normalisation shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    export_model(cfg, "onnx", out, *EXPORT_HW, check=False, model=model)
    export_model(cfg, "torchscript", out, *EXPORT_HW, check=False, model=model)
    return cfg, model, out


def pytorch_detections(model, image: np.ndarray) -> Detections:
    """The model's own inference on one (1, C, H, W) input, boxes in input pixels."""
    with torch.no_grad():
        inst = model.inference([{"image": torch.from_numpy(image[0])}], do_postprocess=False)[0]
    return Detections(inst.pred_boxes.tensor.numpy(), inst.scores.numpy(), inst.pred_classes.numpy())


def assert_same(ref: Detections, got: Detections) -> None:
    r = match_detections(ref, got, min_iou=0.99)
    assert r["count_ref"] > 0, "no detections: the comparison would prove nothing"
    assert r["count_ref"] == r["count_other"], r
    assert r["same"], r
    assert r["max_score_diff"] <= 1e-3, r
    assert got.classes.dtype == np.int64 and got.boxes.shape == (r["count_ref"], 4)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_export_matches_pytorch(exported, test_inputs, kind, one_thread):
    cfg, model, out = exported
    runner = load_runner(out, kind, threads=1)
    for image in test_inputs:
        ref = pytorch_detections(model, image)
        assert_same(ref, runner(image))
        h, w = image.shape[-2:]
        assert (ref.boxes[:, [0, 2]] <= w).all() and (ref.boxes[:, [1, 3]] <= h).all()


def test_meta_records_the_contract(exported):
    cfg, _, out = exported
    meta = read_meta(out)
    assert set(meta["files"]) == {"onnx", "torchscript"}
    inp = meta["input"]
    assert inp["shape"] == [1, 5, "height", "width"] and inp["dynamic_hw"] and inp["export_hw"] == list(EXPORT_HW)
    assert inp["file_channels"] == file_channel_indices(cfg) == [0, 1, 2, 3, 4]
    assert [c["modality"] for c in inp["channels"]] == ["rgb"] * 3 + ["thermal", "event"]
    assert inp["pixel_mean"] == list(cfg.MODEL.PIXEL_MEAN) and inp["normalized_inside"]
    assert inp["resize"]["min_size"] == 64 and inp["resize"]["max_size"] == 96
    assert meta["exports"]["onnx"]["opset"] == 17 and meta["classes"] == ["object"]
    assert len(meta["model_fingerprint"]) == 16
    json.dumps(meta)


@pytest.mark.parametrize("exported", ["frm_ffm"], indirect=True)
def test_a_folder_holds_one_model(exported, tmp_path, one_thread):
    """A second export of the same model keeps the other format; one of another model (other
    weights, or a threshold baked into the file) removes it, so that ``--evaluate`` and
    ``load_runner`` never take another model's file for this one."""
    import shutil

    cfg, model, src = exported
    out = str(tmp_path / "x")
    shutil.copytree(src, out)
    first = read_meta(out)["model_fingerprint"]
    export_model(cfg, "torchscript", out, *EXPORT_HW, check=False, model=model)  # the same model again
    assert set(read_meta(out)["files"]) == {"onnx", "torchscript"} and read_meta(out)["model_fingerprint"] == first
    other = build_export_model(cfg)  # seed 0, BatchNorm statistics not those of the fixture's model
    meta = export_model(cfg, "torchscript", out, *EXPORT_HW, check=False, model=other)
    assert set(meta["files"]) == {"torchscript"} and meta["model_fingerprint"] != first
    assert sorted(os.listdir(out)) == [META_FILE, "model.ts"]
    export_model(cfg, "onnx", out, *EXPORT_HW, check=False, model=other)
    stricter = cfg.clone()
    stricter.defrost()
    stricter.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.5
    meta = export_model(stricter, "torchscript", out, *EXPORT_HW, check=False, model=other)
    assert set(meta["files"]) == {"torchscript"} and not os.path.exists(os.path.join(out, "model.onnx"))


def test_no_detection_gives_empty_outputs_of_the_contract_shape(data_root, tmp_path, one_thread):
    """SCORE_THRESH_TEST 1.0 keeps nothing: both files give (0, 4) / (0,) / (0,) int64 at any size,
    like PyTorch, and the export's own check passes while saying it compared nothing."""
    cfg = fusion_cfg(data_root, str(tmp_path), "sum", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0")
    out = str(tmp_path / "empty")
    model = build_export_model(cfg)
    for fmt in ("onnx", "torchscript"):
        meta = export_model(cfg, fmt, out, *EXPORT_HW, model=model)
        assert [c["count_ref"] for c in meta["exports"][fmt]["checks"]] == [0, 0]
    session = onnxruntime.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    script = torch.jit.load(os.path.join(out, "model.ts"))
    for h, w in ((64, 96), (40, 130)):
        x = np.full((1, 5, h, w), 100, np.float32)
        with torch.no_grad():
            raw = {"onnx": session.run(None, {"image": x}),
                   "torchscript": [t.numpy() for t in script(torch.from_numpy(x))]}
        for kind, (boxes, scores, classes) in raw.items():
            assert (boxes.shape, scores.shape, classes.shape) == ((0, 4), (0,), (0,)), kind
            assert (boxes.dtype, scores.dtype, classes.dtype) == (np.float32, np.float32, np.int64), kind


def test_batch_of_two_is_refused(exported):
    _, _, out = exported
    two = np.zeros((2, 5, 64, 96), np.float32)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=r"invalid dimensions for input: image .*\n index: 0 Got: 2 Expected: 1"):
        load_runner(out, "onnx")(two)
    # the traced wrapper flattens (C, H, W) of the one image: 2 images do not fit
    with pytest.raises(RuntimeError, match=r"shape '\[5, 64, 96\]' is invalid for input of size 61440"):
        load_runner(out, "torchscript")(two)


def test_preprocess_equals_the_test_mapper(data_root, tmp_path):
    """The contract's preprocessing (used without Detectron2's mapper) gives the mapper's input."""
    cfg = fusion_cfg(data_root, str(tmp_path), "frm_ffm", "CADET.INPUT.MODALITIES", "['thermal', 'rgb']",
                     "MODEL.PIXEL_MEAN", "[1, 2, 3, 4]", "MODEL.PIXEL_STD", "[1, 1, 1, 1]")
    from cadet_d2.export import build_meta

    meta = build_meta(cfg, EXPORT_HW, {})
    assert meta["input"]["file_channels"] == [3, 0, 1, 2]
    path = os.path.join(data_root, "images", sorted(os.listdir(os.path.join(data_root, "images")))[0])
    expected = MultiModalDatasetMapper(cfg, is_train=False)({"file_name": path})["image"][None].numpy()
    got = preprocess(np.load(path), meta)
    assert got.shape == expected.shape == (1, 4, 64, 85)
    np.testing.assert_array_equal(got, expected)


def test_verify_catches_a_wrong_export(exported, test_inputs):
    """The export check is not vacuous: a runner that loses a box or shifts one fails it."""
    _, model, out = exported
    onnx = OnnxRunner(os.path.join(out, "model.onnx"), threads=1)
    image = torch.from_numpy(test_inputs[2])
    verify(onnx, TorchRunner(model), [image])

    def drop_last(x):
        d = onnx(x)
        return Detections(d.boxes[:-1], d.scores[:-1], d.classes[:-1])

    def shift_one(x):
        d = onnx(x)
        d.boxes[0] += 3.0
        return d

    for bad in (drop_last, shift_one):
        with pytest.raises(ExportMismatchError):
            verify(bad, TorchRunner(model), [image])


def test_verify_says_when_it_compared_no_detection():
    """A check of two empty outputs passes (both empty) but says that it verified nothing."""
    import logging

    class Keep(logging.Handler):  # on the logger itself: Detectron2's setup_logger stops propagation
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    def empty(x):
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def one(x):
        return Detections(np.array([[1, 1, 9, 9]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int64))

    image = torch.zeros(1, 5, 64, 64)
    keep, logger = Keep(), logging.getLogger("cadet_d2")
    logger.addHandler(keep)
    try:
        reports = verify(empty, empty, [image])
        said = list(keep.messages)
        verify(one, one, [image])
    finally:
        logger.removeHandler(keep)
    assert reports[0]["same"] and reports[0]["count_ref"] == 0
    assert len(said) == 1 and "compared no detection" in said[0] and "--evaluate" in said[0], said
    assert keep.messages == said  # a check with detections says nothing more


def test_evaluate_runner_scores_the_images_it_ran_and_no_detection_as_zero(data_root, tmp_path):
    """--eval-limit: only the evaluated images' ground truth counts (a runner that returns the
    ground truth scores AP 100 on the first image of a 2-image set, not about 50); a runner that
    detects nothing scores AP 0, not NaN."""
    from conftest import registered_cfg
    from detectron2.data import DatasetCatalog

    from cadet_d2.export import evaluate_runner

    cfg = registered_cfg(data_root, str(tmp_path), "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96")
    dicts = iter(DatasetCatalog.get("synth_daytest1"))

    def ground_truth(x: np.ndarray) -> Detections:  # the next image's boxes, in input pixels
        d = next(dicts)
        scale = np.array([x.shape[-1] / d["width"], x.shape[-2] / d["height"]] * 2, dtype=np.float32)
        boxes = np.array([a["bbox"] for a in d["annotations"]], dtype=np.float32) * scale
        return Detections(boxes, np.ones(len(boxes), np.float32), np.zeros(len(boxes), np.int64))

    first = evaluate_runner(ground_truth, cfg, "synth_daytest1", str(tmp_path / "gt"), limit=1)
    assert first["AP"] == pytest.approx(100.0), first
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    none = evaluate_runner(lambda x: empty, cfg, "synth_daytest1", str(tmp_path / "none"))
    assert none["AP"] == 0.0 and none["AP50"] == 0.0, none


def load_tool(name: str):
    """tools/<name>.py as a module (its main(argv) is called in-process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(HERE, "tools", f"{name}.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def cli_opts(data_root: str, out: str, *extra: str) -> list[str]:
    return ["MODEL.DEVICE", "cpu", "CADET.DATA.ROOT", data_root, "CADET.BACKBONE.SIZE", "b0",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "CADET.FUSION.NAME", "cssa",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "OUTPUT_DIR", out, *extra]


@pytest.fixture(scope="module")
def trained_weights(data_root, tmp_path_factory) -> str:
    """model_final.pth of a tiny cssa detector trained 20 iterations (tools/train_net.py), so its
    AP is a number > 0 and its boxes are not those of random weights."""
    from cadet_d2.engine.train import cli

    out = str(tmp_path_factory.mktemp("export_trained"))
    torch.manual_seed(0)
    cli(["--config-file", BASE_CONFIG, *cli_opts(data_root, out),
         "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "DATALOADER.NUM_WORKERS", "0",
         "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "20", "SOLVER.BASE_LR", "0.002", "SOLVER.WARMUP_ITERS", "5",
         "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
         "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATASETS.TEST", "()",
         "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"])
    path = os.path.join(out, "model_final.pth")
    assert os.path.isfile(path)
    return path


def assert_int8_close(ref: Detections, int8: Detections) -> None:
    """int8 keeps the confident detections: at least 3 of fp32's 5 best boxes have an int8 box of
    IoU >= 0.5 (a model trained 20 iterations has close scores, so int8 may reorder a few; 5/5
    static and dynamic on Detectron2 v0.6, 4/5 dynamic on official Detectron2, Zen 3)."""
    top = np.argsort(-ref.scores, kind="stable")[:5]
    best = Detections(ref.boxes[top], ref.scores[top], ref.classes[top])
    r = match_detections(best, int8, min_iou=0.5)
    assert r["count_ref"] == 5 and r["matched"] >= 3, r


def test_cli_exports_checks_and_evaluates(data_root, trained_weights, tmp_path, one_thread):
    """tools/export.py main(argv): ONNX + static int8, its own check, then AP of each runtime."""
    cli = load_tool("export")
    out = str(tmp_path / "cli")
    meta = cli.main(["--config-file", BASE_CONFIG, "--format", "onnx", "--output", out, "--height", "64",
                     "--width", "80", "--int8", "--calib-images", "2", "--evaluate", "synth_daytest1",
                     *cli_opts(data_root, str(tmp_path / "o"), "MODEL.WEIGHTS", trained_weights)])
    assert os.path.isfile(os.path.join(out, "model.onnx")) and os.path.isfile(os.path.join(out, "model_int8.onnx"))
    assert os.path.isfile(os.path.join(out, META_FILE)) and meta["input"]["export_hw"] == [64, 80]
    assert meta["exports"]["onnx_int8"]["method"] == "static"
    assert meta["exports"]["onnx_int8"]["calibration"] == {"source": "synth_train", "images": 2}
    checks = meta["exports"]["onnx"]["checks"]  # the example, another size, 2 calibration images (64 x 85)
    assert [c["hw"] for c in checks] == [[64, 80], [96, 48], [64, 85], [64, 85]]
    assert all(c["same"] and c["count_ref"] for c in checks)
    close = meta["exports"]["onnx_int8"]["agreement"]  # reported for int8, not enforced
    assert [c["hw"] for c in close] == [c["hw"] for c in checks] and all(c["iou_threshold"] == 0.5 for c in close)
    assert [c["count_ref"] for c in close] == [c["count_ref"] for c in checks]
    assert all(0 < c["matched"] <= c["count_ref"] for c in close), close
    ap = meta["evaluation"]["synth_daytest1"]
    assert set(ap) == {"pytorch", "onnx", "onnx_int8"}
    assert all(np.isfinite(m["AP"]) for m in ap.values()), ap
    assert ap["pytorch"]["AP"] > 0, ap
    assert ap["onnx"]["AP"] == pytest.approx(ap["pytorch"]["AP"], abs=1e-6)
    image = np.load(os.path.join(data_root, "daytest1", "images", "daytest10000.npy"))
    image = image.transpose(2, 0, 1)[None].astype(np.float32)
    fp32 = load_runner(out, "onnx", threads=1)(image)
    assert_int8_close(fp32, load_runner(out, "onnx_int8", threads=1)(image))
    with pytest.raises(FileNotFoundError, match="torchscript"):
        load_runner(out, "torchscript")


def test_cli_dynamic_int8(data_root, trained_weights, tmp_path, one_thread):
    """--int8-method dynamic: no calibration data, no data set registered; boxes close to fp32."""
    cli = load_tool("export")
    out = str(tmp_path / "dyn")
    meta = cli.main(["--config-file", BASE_CONFIG, "--output", out, "--int8", "--int8-method", "dynamic",
                     "--no-check", *cli_opts(data_root, str(tmp_path / "o"), "MODEL.WEIGHTS", trained_weights)])
    assert meta["exports"]["onnx_int8"] == {"file": "model_int8.onnx", "method": "dynamic", "from": "model.onnx"}
    image = np.load(os.path.join(data_root, "images", "img0000.npy")).transpose(2, 0, 1)[None].astype(np.float32)
    assert_int8_close(load_runner(out, "onnx", threads=1)(image), load_runner(out, "onnx_int8", threads=1)(image))


@pytest.mark.parametrize("argv,message", [
    (["--format", "torchscript", "--int8"], "--int8 quantizes the ONNX file: use it with --format onnx"),
    (["--opset", "15"], "--opset must be >= 16"),
])
def test_cli_refuses_bad_options(argv, message, capsys):
    cli = load_tool("export")
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["--config-file", BASE_CONFIG, "--output", "unused", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("exported", ["gaff"], indirect=True)  # one fusion is enough
def test_deploy_benchmark_mode(exported, tmp_path):
    """tools/benchmark.py --mode deploy times PyTorch and each file of the folder in turn."""
    cfg, _, out = exported
    cli = load_tool("benchmark")
    image = os.path.join(cfg.CADET.DATA.ROOT, "images", "img0000.npy")
    opts = ["MODEL.DEVICE", "cpu", "CADET.DATA.ROOT", cfg.CADET.DATA.ROOT, "CADET.BACKBONE.SIZE", "b0",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "CADET.FUSION.NAME", cfg.CADET.FUSION.NAME]
    r = cli.main(["--config-file", BASE_CONFIG, "--mode", "deploy",
                  "--export-dir", out, "--iters", "2", "--warmup", "0", "--threads", "1", "--image", image,
                  "--json", str(tmp_path / "b.json"), *opts])
    assert set(r["runtimes"]) == {"pytorch", "onnx", "torchscript"} and (r["height"], r["width"]) == (64, 85)
    assert all(v["median_ms"] > 0 and len(v["times_ms"]) == 2 for v in r["runtimes"].values())
    assert r["runtimes"]["pytorch"]["time_ratio_to_pytorch"] == 1.0
    assert json.load(open(tmp_path / "b.json"))["mode"] == "deploy"
