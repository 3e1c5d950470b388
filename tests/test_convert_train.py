"""Each converted shared sample trains a few iterations from its configs/datasets/ config and is
evaluated (rgb + thermal; day and night sets for FLIR and KAIST), through tools/train_net.py's
main. Skipped without shared/data/rgbt-samples."""
from __future__ import annotations

import json
import os

import pytest
from detectron2.engine import default_argument_parser

from cadet_d2.convert.cli import main as convert_main
from cadet_d2.engine.train import main as train_main

from test_convert import SAMPLES, needs_samples

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke-run overrides of the README walk-through, smaller still (MiT-b0, 64 px).
SMOKE = [
    "MODEL.DEVICE", "cpu", "CADET.BACKBONE.PRETRAINED", "", "CADET.BACKBONE.SIZE", "b0",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
]
# (data set, sample folder, config, overrides for what the sample holds, expected test sets)
CASES = [
    ("llvip", "LLVIP", "frm_ffm_mit_b1.yaml", ["DATASETS.TEST", "('llvip_train',)"], ["llvip_train"]),
    ("flir", "FLIR_aligned_coco", "cssa_mit_b1_s1.yaml",
     ["CADET.DATA.TEST_SETS", "['train_day', 'train_night']", "DATASETS.TEST", "('flir_train_day', 'flir_train_night')"],
     ["flir_train_day", "flir_train_night"]),
    ("kaist", "KAIST", "frm_ffm_mit_b1.yaml",
     ["CADET.DATA.TRAIN_SET", "test", "CADET.DATA.TEST_SETS", "['test_day', 'test_night']",
      "DATASETS.TEST", "('kaist_test_day', 'kaist_test_night')"], ["kaist_test_day", "kaist_test_night"]),
    ("m3fd", "M3FD", "cssa_mit_b1_s1.yaml",
     ["CADET.DATA.TEST_SETS", "[]", "DATASETS.TEST", "('m3fd_train',)"], ["m3fd_train"]),
]
# --to-npy writes 4-channel arrays (rgb, thermal): the same config with FILE_CHANNELS 4.
CASES.append(("kaist", "KAIST", "cssa_mit_b1_s1.yaml", CASES[2][3] + ["CADET.INPUT.FILE_CHANNELS", "4"], CASES[2][4]))
IDS = ["llvip", "flir", "kaist", "m3fd", "kaist-npy"]


@needs_samples
@pytest.mark.parametrize("dataset, folder, config, opts, test_sets", CASES, ids=IDS)
def test_sample_trains_and_evaluates(dataset, folder, config, opts, test_sets, tmp_path, one_thread):
    root, out = str(tmp_path / dataset), str(tmp_path / "run")
    extra = ["--test-fraction", "0"] if dataset == "m3fd" else []
    if "CADET.INPUT.FILE_CHANNELS" in opts:
        extra.append("--to-npy")
    assert convert_main([dataset, "--src", os.path.join(SAMPLES, folder), "--out", root, *extra]) == 0
    if "--to-npy" in extra:
        assert len(os.listdir(os.path.join(root, "test", "images"))) == 4
        assert not os.path.exists(os.path.join(root, "test", "pairs.csv"))
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "datasets", dataset, config),
        *SMOKE, "CADET.DATA.ROOT", root, "OUTPUT_DIR", out, *opts])
    train_main(args)
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)["datasets"]
    assert sorted(metrics) == sorted(test_sets)
    for m in metrics.values():
        assert "AP50" in m
        if dataset == "kaist":  # its config turns KAIST's miss rate on
            assert any("MR" in k for k in m), m
