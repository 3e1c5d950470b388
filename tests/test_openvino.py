"""OpenVINO export of a tiny trained detector: the PyTorch model's boxes at every input size, bf16
and int8 (NNCF) checked by agreement and AP, the runtime in tools/predict.py and the deploy
benchmark, and the project without openvino installed.

One export (``tools/export.py --format openvino --precision bf16,int8``) serves the module; each
new input shape is one OpenVINO compile (about a second for this model), so the sizes are few.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import openvino
import pytest
import torch
from test_export import BASE_CONFIG, HERE, assert_same, cli_opts, data_root, load_tool, pytorch_detections  # noqa: F401
from test_export import trained_weights  # noqa: F401  (fixture)

from cadet_d2.engine import load_config
from cadet_d2.export import build_export_model, load_runner, read_meta
from cadet_d2.export.openvino import OpenVinoRunner


@pytest.fixture(scope="module")
def ov_export(data_root, trained_weights, tmp_path_factory):  # noqa: F811
    """(opts, export dir, meta) of the trained tiny model exported to ONNX and OpenVINO fp32/bf16/int8."""
    out = str(tmp_path_factory.mktemp("openvino"))
    opts = cli_opts(data_root, os.path.join(out, "o"), "MODEL.WEIGHTS", trained_weights)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        meta = load_tool("export").main(["--config-file", BASE_CONFIG, "--format", "openvino", "--output", out,
                                         "--height", "64", "--width", "96", "--precision", "bf16,int8",
                                         "--calib-images", "2", "--evaluate", "synth_daytest1", *opts])
    finally:
        torch.set_num_threads(n)
    return opts, out, meta


def test_meta_records_checks_precisions_and_ap(ov_export):
    _, out, meta = ov_export
    stored = read_meta(out)  # the evaluation is in the folder's export_meta.json
    assert stored["ap_parity"] == meta["ap_parity"] and stored["evaluation"].keys() == meta["evaluation"].keys()
    files = meta["files"]
    assert files["openvino"] == files["openvino_bf16"] == "model_openvino.xml"
    assert files["openvino_int8"] == "model_openvino_int8.xml" and files["onnx"] == "model.onnx"
    for name in ("model_openvino.xml", "model_openvino.bin", "model_openvino_int8.xml", "model_openvino_int8.bin"):
        assert os.path.isfile(os.path.join(out, name)), name
    ex = meta["exports"]
    assert [ex[k]["inference_precision_hint"] for k in ("openvino", "openvino_bf16")] == ["f32", "bf16"]
    assert ex["openvino"]["openvino"] == openvino.__version__
    # fp32 is held to the ONNX file's tolerance on the example (64 x 96: both sides multiples of
    # 32), another size (96 x 64) and the two calibration images (64 x 85)
    checks = ex["openvino"]["checks"]
    assert [c["hw"] for c in checks] == [[64, 96], [96, 64], [64, 85], [64, 85]]
    assert all(c["same"] and c["count_ref"] > 0 and c["max_score_diff"] <= 1e-3 for c in checks), checks
    for kind in ("openvino_bf16", "openvino_int8"):  # reported, not enforced
        assert "checks" not in ex[kind]
        assert all(0 < c["matched"] <= c["count_ref"] for c in ex[kind]["agreement"]), ex[kind]
    assert ex["openvino_int8"]["calibration"]["source"] == "synth_train"
    assert ex["openvino_int8"]["calibration"]["images"] == 2 and ex["openvino_int8"]["calibration"]["resized_to"] == [64, 96]
    ap = meta["evaluation"]["synth_daytest1"]
    assert set(ap) == {"pytorch", "onnx", "openvino", "openvino_bf16", "openvino_int8"} and ap["pytorch"]["AP"] > 0
    parity = meta["ap_parity"]
    assert parity["openvino"]["synth_daytest1"]["within"], parity
    assert parity["openvino_bf16"]["synth_daytest1"]["tolerance"] == 0.5
    assert parity["openvino_int8"]["synth_daytest1"]["tolerance"] == 1.0
    assert parity["openvino"]["synth_daytest1"]["delta"] == pytest.approx(ap["openvino"]["AP"] - ap["pytorch"]["AP"],
                                                                       abs=1e-3)


def test_every_input_size_gives_pytorchs_boxes(ov_export, one_thread):
    """Sides that are multiples of 32 (64, 96) and sides that are not (50, 85, 100): the dynamic
    graph would pad the first ones 32 px more; each shape compiled statically gives PyTorch's."""
    opts, out, _ = ov_export
    model = build_export_model(load_config(BASE_CONFIG, opts))
    runner = load_runner(out, "openvino", threads=1)
    g = torch.Generator().manual_seed(3)
    for h, w in ((64, 96), (96, 64), (64, 85), (50, 100)):
        x = (torch.rand(1, 5, h, w, generator=g) * 255).numpy()
        assert_same(pytorch_detections(model, x), runner(x))
    assert list(runner.compiled) == [(1, 5, 64, 96), (1, 5, 96, 64), (1, 5, 64, 85), (1, 5, 50, 100)]


def test_compiled_shapes_are_bounded(ov_export):
    _, out, _ = ov_export
    runner = OpenVinoRunner(os.path.join(out, "model_openvino.xml"), threads=1, cache_size=2)
    for w in (64, 96, 64, 128):
        runner(np.zeros((1, 5, 64, w), np.float32))
    assert list(runner.compiled) == [(1, 5, 64, 64), (1, 5, 64, 128)]
    with pytest.raises(ValueError, match="one image"):
        runner(np.zeros((2, 5, 64, 64), np.float32))


def test_int8_quantization_prints_no_log_lines(ov_export, tmp_path, capfd):
    from cadet_d2.export.openvino import quantize_int8

    _, out, _ = ov_export
    calib = [np.random.default_rng(i).uniform(0, 255, (1, 5, 64, 85)).astype(np.float32) for i in range(2)]
    capfd.readouterr()
    quantize_int8(os.path.join(out, "model_openvino.xml"), str(tmp_path / "q.xml"), calib, (64, 96))
    printed = "".join(capfd.readouterr())
    assert os.path.isfile(tmp_path / "q.xml")
    assert "INFO:nncf" not in printed and "ignored nodes" not in printed and "No CUDA runtime" not in printed, printed


def test_predict_tool_runs_openvino_like_pytorch(ov_export, data_root, tmp_path):  # noqa: F811
    opts, out, _ = ov_export
    cli = load_tool("predict")
    images = os.path.join(data_root, "images")
    common = ["--config-file", BASE_CONFIG, "--input", images, "--score-thresh", "0.3", "--no-progress"]
    cli.main([*common, "--output", str(tmp_path / "pt"), *opts])
    cli.main([*common, "--output", str(tmp_path / "ov"), "--runtime", "openvino", "--export-dir", out,
              "--threads", "1", *opts])
    pt, ov = (json.load(open(tmp_path / d / "predictions.json")) for d in ("pt", "ov"))
    assert len(pt) == len(ov) > 0
    for a, b in zip(pt, ov):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert np.allclose(a["bbox"], b["bbox"], atol=0.05) and abs(a["score"] - b["score"]) < 1e-3
    with pytest.raises(ValueError, match="another config"):  # an export of another input contract
        cli.main([*common, "--output", str(tmp_path / "x"), "--runtime", "openvino", "--export-dir", out, *opts,
                  "INPUT.MIN_SIZE_TEST", "72"])


@pytest.mark.parametrize("argv,message", [
    (["--runtime", "openvino"], "--export-dir goes with --runtime"),
    (["--runtime", "openvino", "--export-dir", "x", "--vis-fusion"], "--vis-fusion draws"),
])
def test_predict_refuses_bad_runtime_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_tool("predict").main(["--config-file", BASE_CONFIG, "--input", "x.npy", "--output", "o", *argv])
    assert message in capsys.readouterr().err


def test_deploy_benchmark_times_openvino_beside_the_others(ov_export, data_root, tmp_path):  # noqa: F811
    opts, out, _ = ov_export
    r = load_tool("benchmark").main(["--config-file", BASE_CONFIG, "--mode", "deploy", "--export-dir", out,
                                     "--iters", "2", "--warmup", "1", "--threads", "1",
                                     "--image", os.path.join(data_root, "images", "img0000.npy"), *opts])
    assert set(r["runtimes"]) == {"pytorch", "onnx", "openvino", "openvino_bf16", "openvino_int8"}
    assert r["openvino"] == openvino.__version__ and r["runtimes"]["onnx"]["time_ratio_to_onnx"] == 1.0
    assert all(v["median_ms"] > 0 and len(v["times_ms"]) == 2 for v in r["runtimes"].values())


@pytest.mark.parametrize("argv,message", [
    (["--precision", "bf16"], "--precision goes with --format openvino"),
    (["--format", "openvino", "--precision", "fp16"], "--precision 'fp16': choose from fp32, bf16, int8"),
])
def test_export_refuses_bad_precision(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_tool("export").parse_args(["--config-file", BASE_CONFIG, "--output", "unused", *argv])
    assert message in capsys.readouterr().err


WITHOUT_OPENVINO = """
import runpy, sys
sys.modules["openvino"] = None  # import openvino now raises ImportError, as when not installed
sys.modules["nncf"] = None
from cadet_d2.utils.tool import run_tool
from cadet_d2.export import load_runner
cli = runpy.run_path(sys.argv[1])
args = sys.argv[2:]
cli["main"](["--format", "onnx", *args])
import numpy as np
print("onnx ran:", len(load_runner(args[args.index("--output") + 1], "onnx")(np.zeros((1, 5, 64, 64), np.float32)).scores))
run_tool(lambda: cli["main"](["--format", "openvino", *args]), also=(cli["MissingPackageError"],))
"""


def test_without_openvino_onnx_works_and_openvino_says_how_to_install(data_root, tmp_path):  # noqa: F811
    opts = cli_opts(data_root, str(tmp_path / "o"))
    r = subprocess.run([sys.executable, "-c", WITHOUT_OPENVINO, os.path.join(HERE, "tools", "export.py"),
                        "--config-file", BASE_CONFIG, "--output", str(tmp_path / "x"), "--height", "64",
                        "--width", "64", *opts], capture_output=True, text=True, timeout=300, cwd=HERE,
                       env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HERE))
    assert "onnx ran:" in r.stdout, r.stderr[-2000:]
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        "error: the OpenVINO runtime needs the optional package 'openvino', which is not installed: "
        "pip install .[openvino] (or make setup: requirements.txt pins it)")
    assert "Traceback" not in r.stderr
