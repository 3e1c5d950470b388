"""Inference and export load MODEL.WEIGHTS exactly or stop (keys named); a device the machine
lacks stops before a model is built. Tiny CSSA / sum models (tests/conftest.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cadet_d2.engine.launch import DeviceError
from cadet_d2.inference import load_model
from cadet_d2.engine.weights import WeightsMismatchError

from conftest import make_tiny_root, run_demo_tool, tiny_cfg

DUAL = ["MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A data root and the weights file of a tiny CSSA model, saved as train_net saves them."""
    base = tmp_path_factory.mktemp("weights")
    root = make_tiny_root(str(base / "data"), n=2, test_sets=())
    cfg = tiny_cfg(root, str(base / "out"), *DUAL, "CADET.FUSION.NAME", "cssa")
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    weights = str(base / "run" / "model_final.pth")
    os.makedirs(os.path.dirname(weights))
    torch.save({"model": model.state_dict(), "iteration": 2}, weights)
    return {"root": root, "base": str(base), "weights": weights, "model": model}


def test_weights_of_the_same_config_load_every_parameter(run, one_thread):
    cfg = tiny_cfg(run["root"], run["base"], *DUAL, "CADET.FUSION.NAME", "cssa", "MODEL.WEIGHTS", run["weights"])
    torch.manual_seed(1)  # another initialisation: every value must come from the file
    loaded = load_model(cfg).state_dict()
    for k, v in run["model"].state_dict().items():
        assert torch.equal(loaded[k], v), k


def test_weights_of_another_fusion_stop_naming_the_keys(run, one_thread):
    cfg = tiny_cfg(run["root"], run["base"], *DUAL, "CADET.FUSION.NAME", "sum", "MODEL.WEIGHTS", run["weights"])
    with pytest.raises(WeightsMismatchError) as e:
        load_model(cfg)
    msg = str(e.value)
    assert f"MODEL.WEIGHTS {run['weights']} does not fit the model of this config" in msg
    assert "file keys the model lacks (backbone.bottom_up.fusions.0." in msg  # the CSSA modules
    assert "model keys not in the file" not in msg  # sum has no parameters of its own


def test_weights_of_another_class_count_stop_naming_the_shapes(run, one_thread):
    cfg = tiny_cfg(run["root"], run["base"], *DUAL, "CADET.FUSION.NAME", "cssa", "MODEL.ROI_HEADS.NUM_CLASSES", "4",
                   "MODEL.WEIGHTS", run["weights"])
    with pytest.raises(WeightsMismatchError) as e:
        load_model(cfg)
    msg = str(e.value)  # the tiny root has 1 class: 2 scores (+ background) in the file, 5 in the model
    assert "4 shapes differ (roi_heads.box_predictor.cls_score.weight file (2, 1024) vs model (5, 1024)" in msg
    assert "not in the file" not in msg and "the model lacks" not in msg


def test_weights_of_an_early_fusion_model_point_to_the_runs_config(run, one_thread):
    with open(os.path.join(os.path.dirname(run["weights"]), "config.yaml"), "w") as f:
        f.write("MODEL: {}\n")
    try:
        cfg = tiny_cfg(run["root"], run["base"], "MODEL.BACKBONE.NAME", "build_mit_fpn_backbone",  # one stream
                       "MODEL.WEIGHTS", run["weights"])
        with pytest.raises(WeightsMismatchError) as e:
            load_model(cfg)
    finally:
        os.remove(os.path.join(os.path.dirname(run["weights"]), "config.yaml"))
    msg = str(e.value)
    assert "model keys not in the file (backbone.bottom_up.stream." in msg
    assert "file keys the model lacks (backbone.bottom_up.rgb_stream." in msg
    assert f"saved its config as {os.path.join(os.path.dirname(run['weights']), 'config.yaml')}" in msg


@NO_CUDA
def test_load_model_checks_the_device_first(run):
    cfg = tiny_cfg(run["root"], run["base"], "MODEL.DEVICE", "cuda")
    with pytest.raises(DeviceError, match="MODEL.DEVICE 'cuda' but CUDA is not available here"):
        load_model(cfg)


@pytest.mark.parametrize("tool, args, opts, message", [
    pytest.param("predict", ["--input", "{tmp}/a.npy", "--output", "{tmp}/p"], ["MODEL.DEVICE", "cuda"],
                 "error: MODEL.DEVICE 'cuda' but CUDA is not available here", marks=NO_CUDA),
    pytest.param("predict", ["--input", "{tmp}/a.npy", "--output", "{tmp}/p", "--device", "cuda"], [],
                 "error: MODEL.DEVICE 'cuda' but CUDA is not available here", marks=NO_CUDA),
    pytest.param("fusion_maps", ["--image", "{tmp}/a.npy", "--output", "{tmp}/a.png"], ["MODEL.DEVICE", "cuda"],
                 "error: MODEL.DEVICE 'cuda' but CUDA is not available here", marks=NO_CUDA),
    ("export", ["--output", "{tmp}/x", "--no-check"], ["MODEL.WEIGHTS", "{tmp}/other.pth"],
     "error: MODEL.WEIGHTS {tmp}/other.pth does not fit the model of this config"),
    ("predict", ["--input", "{tmp}/a.npy", "--output", "{tmp}/p"], ["MODEL.WEIGHTS", "{tmp}/other.pth"],
     "error: MODEL.WEIGHTS {tmp}/other.pth does not fit the model of this config"),
    ("predict", ["--input", "{tmp}/a.npy", "--output", "{tmp}/p"], ["MODEL.WEIGHTS", "{tmp}/nope.pth"],
     "error: MODEL.WEIGHTS {tmp}/nope.pth: no such file"),
])
def test_tools_stop_on_a_missing_device_or_foreign_weights(tmp_path, tool, args, opts, message):
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    np.save(tmp_path / "a.npy", np.zeros((48, 64, 5), np.uint8))
    r = run_demo_tool(tool, tmp_path, *args, *opts)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert message.replace("{tmp}", str(tmp_path)) in last, r.stderr[-2000:]
    if "does not fit" in message:
        assert "file keys the model lacks (foo.weight)" in last and "model keys not in the file" in last
    assert not os.path.exists(tmp_path / "p" / "predictions.json")
