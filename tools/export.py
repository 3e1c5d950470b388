#!/usr/bin/env python
"""Export a cadet_d2 detector (backbone + FPN + RPN + RoI heads + NMS) to ONNX, TorchScript or OpenVINO.

    python tools/export.py --config-file configs/demo/demo_frm_ffm.yaml --format onnx --output output/export/frm_ffm \
        MODEL.WEIGHTS output/demo_frm_ffm/model_final.pth
    python tools/export.py ... --format torchscript --output output/export/frm_ffm          # same folder: model.ts
    python tools/export.py ... --format onnx --int8 --output output/export/frm_ffm \
        --evaluate synth_daytest1,synth_nighttest1    # + model_int8.onnx, AP of PyTorch / ONNX / int8
    python tools/export.py ... --format openvino --precision fp32,bf16,int8 --output output/export/frm_ffm
        # model.onnx, then its OpenVINO IR model_openvino.xml (fp32; bf16 at compile time) and
        # model_openvino_int8.xml (NNCF, calibrated on --calib-images of --calib-dataset)

Writes DIR/model.onnx (model_int8.onnx, model_openvino*.xml) or DIR/model.ts and DIR/export_meta.json, the input
contract: (1, C, H, W) float32 0-255 in CADET.INPUT.MODALITIES order, resized like the test
mapper, any H and W; outputs boxes (N, 4) xyxy in input pixels, scores (N,), classes (N,) int64.
Details: docs/export.md.
"""
import argparse
import logging
import os

from cadet_d2.engine import load_config
from cadet_d2.export import (
    META_FILE, build_export_model, evaluate_export, export_model, format_ap_table, model_inputs, record_evaluation,
)
from cadet_d2.export.openvino import PRECISIONS, MissingPackageError, require
from cadet_d2.utils.io import atomic_write_json
from cadet_d2.utils.tool import run_tool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--format", choices=("onnx", "torchscript", "openvino"), default="onnx",
                   help="openvino: model.onnx, then its OpenVINO IR(s) of --precision")
    p.add_argument("--precision", action="append", default=[], metavar="P[,P]",
                   help=f"openvino: {', '.join(PRECISIONS)} (repeatable or comma-separated; default fp32; the fp32 IR "
                        "is always written and checked)")
    p.add_argument("--output", required=True, help="export folder")
    p.add_argument("--height", type=int, default=0, help="tracing example height (default: test size of a 3:4 image)")
    p.add_argument("--width", type=int, default=0, help="tracing example width; the files accept any size")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16)")
    p.add_argument("--int8", action="store_true", help="also write model_int8.onnx (ONNX Runtime quantization)")
    p.add_argument("--int8-method", choices=("static", "dynamic"), default="static",
                   help="static: calibrated on --calib-images of --calib-dataset (faster); dynamic: no data")
    p.add_argument("--calib-dataset", default="",
                   help="static int8 and OpenVINO int8: registered data set (default DATASETS.TRAIN[0])")
    p.add_argument("--calib-images", type=int, default=32,
                   help="static int8 and OpenVINO int8: calibration images, the first N of the data set")
    p.add_argument("--no-check", action="store_true", help="skip comparing the file with the PyTorch model")
    p.add_argument("--evaluate", action="append", default=[], metavar="DATASET[,DATASET]",
                   help="then COCO AP of PyTorch and of every file in the folder on these registered data sets "
                        "(repeatable or comma-separated)")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate the first N images only (0: all)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if args.int8 and args.format == "torchscript":
        p.error("--int8 quantizes the ONNX file: use it with --format onnx or openvino")
    args.precision = [x for item in args.precision for x in item.split(",") if x]
    if args.precision and args.format != "openvino":
        p.error("--precision goes with --format openvino")
    bad = [x for x in args.precision if x not in PRECISIONS]
    if bad:
        p.error(f"--precision {bad[0]!r}: choose from {', '.join(PRECISIONS)}")
    args.precision = args.precision or (["fp32"] if args.format == "openvino" else [])
    if args.opset < 16:
        p.error("--opset must be >= 16 (RoIAlign with half-pixel coordinates)")
    args.evaluate = [d for item in args.evaluate for d in item.split(",") if d]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.format == "openvino":  # before the trace: a missing package stops at once
        for module in ("openvino", "nncf") if "int8" in args.precision else ("openvino",):
            require(module)
    cfg = load_config(args.config_file, args.opts)
    calibrate = (args.int8 and args.int8_method == "static") or "int8" in args.precision
    if args.evaluate or calibrate:
        from cadet_d2.data import register_from_config

        register_from_config(cfg)
    calib, name = None, ""
    if calibrate:
        name = args.calib_dataset or cfg.DATASETS.TRAIN[0]
        calib = [x for _, x in model_inputs(cfg, name, args.calib_images)]
    model = build_export_model(cfg)
    meta = export_model(cfg, args.format, args.output, args.height, args.width, args.opset, int8=args.int8,
                        int8_method=args.int8_method, calibration=calib, calibration_source=name,
                        check=not args.no_check, model=model, precisions=tuple(args.precision))
    for kind, info in meta["exports"].items():
        checks = "; ".join(f"{c['hw']}: {c['count_ref']} detections, matched {c['matched']}, "
                           f"max |Δscore| {c['max_score_diff']:.1e}" for c in info.get("checks", []))
        close = "; ".join(f"{c['hw']}: {c['matched']} of PyTorch's {c['count_ref']} ({c['count_other']})"
                          for c in info.get("agreement", []))
        print(f"{os.path.join(args.output, info['file'])}"
              + (f"  (check vs PyTorch, same boxes IoU >= 0.99 and |Δscore| <= 1e-3: passed; {checks})"
                 if checks else "")
              + (f"  (not checked for equality: {info.get('precision', 'int8')} moves boxes and scores; matched at "
                 f"IoU >= 0.5: {close}; "
                 "AP: --evaluate)" if close else ""))
    print(f"{os.path.join(args.output, META_FILE)}: input {meta['input']['shape']} float32 0-255, "
          f"channels {meta['input']['modalities']}, resize shorter side {meta['input']['resize']['min_size']}")
    if args.evaluate:
        results = evaluate_export(cfg, model, args.output, args.evaluate, args.eval_limit)
        atomic_write_json(os.path.join(args.output, "eval_ap.json"), results)
        print(format_ap_table(results))
        meta = record_evaluation(args.output, results)
        for kind, by_ds in meta["ap_parity"].items():
            for ds, r in by_ds.items():
                if not r["within"]:
                    logging.getLogger("cadet_d2").warning(
                        f"[cadet] {kind} on {ds}: AP {r['delta']:+.2f} vs PyTorch, beyond ±{r['tolerance']}")
    return meta


if __name__ == "__main__":
    run_tool(main, also=(MissingPackageError,))  # bad path, config or weights file: "error: ...", no traceback
