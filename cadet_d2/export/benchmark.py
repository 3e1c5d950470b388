"""Inference speed of the PyTorch model against its exported files, one image at a time.

The runtimes are called in turn, round after round (pytorch, onnx, onnx_int8, torchscript,
openvino, openvino_bf16, openvino_int8, pytorch, ...), so a load that drifts over minutes slows
them all alike; each gets its median latency, 90th percentile, images/s and the median over
rounds of its time / PyTorch's time and / ONNX Runtime fp32's.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from ..utils.timing import alternating_timings, upper_median
from ..utils.machine import machine_label
from .contract import preprocess, read_meta
from .exporter import build_export_model, export_model
from .runtime import TorchRunner, load_runner
from .tracing import example_image

RUNTIMES = ("pytorch", "onnx", "onnx_int8", "torchscript", "openvino", "openvino_bf16", "openvino_int8")


def _runners(cfg, model, export_dir: str, runtimes, threads: int) -> dict:
    if not os.path.isfile(os.path.join(export_dir, "export_meta.json")):
        export_model(cfg, "onnx", export_dir, model=model)
    files = read_meta(export_dir)["files"]
    out = {}
    for name in runtimes:
        if name == "pytorch":
            out[name] = TorchRunner(model)
        elif name in files:
            out[name] = load_runner(export_dir, name, threads)
    return out


def _version(module: str) -> str:
    from .openvino import require

    return require(module).__version__


def benchmark_runtimes(cfg, export_dir: str, height: int = 320, width: int = 404, iters: int = 20,
                       warmup: int = 3, threads: int = 1, runtimes=RUNTIMES, image_file: str = "") -> dict:
    """Latency of one (1, C, ``height``, ``width``) image through each runtime of ``runtimes`` that
    ``export_dir`` has (the folder is exported to ONNX first when it holds no export).
    ``threads``: torch intra-op threads, ONNX Runtime intra-op threads and OpenVINO inference
    threads (each OpenVINO runner compiles the image's shape in the warm-up). ``image_file``: an
    (H, W, file channels) ``.npy`` image, preprocessed by the contract, instead of a random image
    (a trained model finds objects in it, so NMS does real work). Returns a JSON-ready dict."""
    import onnxruntime

    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    model = build_export_model(cfg)
    runners = _runners(cfg, model, export_dir, runtimes, threads)
    if image_file:
        x = preprocess(np.load(image_file, allow_pickle=False), read_meta(export_dir))
    else:
        x = example_image(len(cfg.MODEL.PIXEL_MEAN), height, width).numpy()
    times, last = alternating_timings({name: functools.partial(run, x) for name, run in runners.items()},
                                      iters, warmup)
    out = {"mode": "deploy", "height": int(x.shape[-2]), "width": int(x.shape[-1]), "channels": int(x.shape[1]),
           "iters": iters, "warmup": warmup, "threads": threads, "machine": machine_label(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "openvino": _version("openvino") if any(n.startswith("openvino") for n in runners) else None,
           "load_avg_before": load_before,
           "load_avg_after": os.getloadavg()[0], "export_dir": export_dir, "image": image_file or "random",
           "weights": cfg.MODEL.WEIGHTS, "backbone_size": cfg.CADET.BACKBONE.SIZE, "backbone": cfg.MODEL.BACKBONE.NAME,
           "fusion": cfg.CADET.FUSION.NAME, "runtimes": {}}
    for name, ts in times.items():
        s = sorted(ts)
        med = upper_median(ts)
        entry = {"median_ms": 1e3 * med, "p90_ms": 1e3 * s[min(len(s) - 1, int(0.9 * len(s)))],
                 "mean_ms": 1e3 * sum(s) / len(s), "images_per_s": 1.0 / med, "detections": len(last[name].scores),
                 "times_ms": [1e3 * t for t in ts]}
        for ref in ("pytorch", "onnx"):  # median over rounds of this runtime's time / the reference's
            if times.get(ref):
                entry[f"time_ratio_to_{ref}"] = upper_median([a / b for a, b in zip(ts, times[ref])])
        out["runtimes"][name] = entry
    return out
