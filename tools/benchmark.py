#!/usr/bin/env python
"""Benchmark a cadet_d2 detector: images/s, peak memory, GFLOPs; prints and writes JSON.

    python tools/benchmark.py --config-file configs/baselines/frm_ffm_mit_b1.yaml --mode train \
        --iters 10 --batch 2 --size 301 391 MODEL.DEVICE cpu
    # bf16 autocast, gradient accumulation, activation checkpointing, torch.compile: config keys
    python tools/benchmark.py --config-file configs/baselines/frm_ffm_mit_b2.yaml --memory MODEL.DEVICE cpu \
        CADET.BACKBONE.CHECKPOINT_STAGES [1,2,3,4]
    python tools/benchmark.py --config-file configs/demo.yaml --mode input   # .npy reading and the mapper
    # loader images/s per worker at LLVIP size: synthetic .npy vs JPEG pairs (written to --workdir),
    # full vs reduced decoding, plus real LLVIP pairs when --llvip names the sample folder
    OMP_NUM_THREADS=1 python tools/benchmark.py --config-file configs/Base-CADET.yaml --mode loader \
        --llvip ../shared/data/rgbt-samples/LLVIP
    # tools/check_data.py's pairs/s on LLVIP-size JPEG pairs (--iters pairs, written to --workdir):
    # every pixel decoded with 1 and 2 worker processes, and --headers-only
    python tools/benchmark.py --config-file configs/Base-CADET.yaml --mode check_data --iters 200
    # inference, one image: PyTorch eager vs the exported files of --export-dir (ONNX Runtime fp32,
    # int8, TorchScript, OpenVINO fp32/bf16/int8), in turn; exports ONNX there first when the folder is empty
    python tools/benchmark.py --config-file configs/demo/demo_frm_ffm.yaml --mode deploy --export-dir output/export/frm \
        --size 320 404 --threads 1 --iters 20 MODEL.WEIGHTS output/demo_frm_ffm/model_final.pth
    # paired: steps of the base config and of each --vs variant alternate in one process
    python tools/benchmark.py --config-file configs/simple/sum_mit_b1.yaml \
        --vs "CADET.FUSION.NAME cssa CADET.FUSION.DEFAULT cssa" MODEL.DEVICE cpu

    # memory planner: peak tensor memory of each setting at batches 1 and 2 (arithmetic skipped),
    # the largest SOLVER.IMS_PER_BATCH per GPU, and the cheapest setting for an effective batch
    python tools/benchmark.py --config-file configs/baselines/frm_ffm_mit_b5.yaml --mode plan --gpu-memory 40 \
        --effective-batch 16 --size 800 1040 --fixed-size 320 416 MODEL.DEVICE cpu
    # which ops bf16 autocast slows down on this CPU: each op of the config's MiT (and the FPN and
    # box head) at the step's shapes, fp32 and bf16 alternating, with the kernels bf16 ran
    python tools/benchmark.py --config-file configs/baselines/frm_ffm_mit_b1.yaml --mode ops \
        --size 320 416 --batch 2 --iters 5 --warmup 1

--memory adds the peak live tensor memory of one extra step (any device; see
cadet_d2/utils/memory.py); --profile N the N ops with the most self CPU time in one extra step;
--step-profile FILE every op of one extra step (forward and backward, with input shapes, and the
forward time of each model part: streams, fusion modules, FPN, RPN, RoI heads) written to FILE,
one section per setting with --vs. A --vs setting whose training diverges is named on stderr
and in the JSON ("diverged"); the other settings go on.
"""
import argparse
import json
import sys

import torch

from cadet_d2.engine import load_config
from cadet_d2.bench.speed import benchmark
from cadet_d2.utils.io import atomic_write_json
from cadet_d2.bench.planner import DEFAULT_SETTINGS, SETTINGS
from cadet_d2.export.openvino import MissingPackageError
from cadet_d2.utils.tool import run_tool


def _input_mode(cfg, args) -> dict:
    import os

    from cadet_d2.layout import file_channel_indices
    from cadet_d2.bench.inputs import mapper_speed, read_strategies

    n = cfg.CADET.INPUT.FILE_CHANNELS
    sets = {"all": list(range(n)), "configured": file_channel_indices(cfg), "rgb": [0, 1, 2], "thermal": [3]}
    reads = read_strategies(os.path.join(cfg.CADET.DATA.ROOT, "images"), sets, limit=args.iters * 20)
    mapper_ms = mapper_speed(cfg, limit=args.iters * 10)
    return {"mode": "input", "read_ms_per_image": reads, "mapper_ms_per_image": mapper_ms,
            "data_root": cfg.CADET.DATA.ROOT, "load_avg": os.getloadavg()[0]}


def _loader_mode(args) -> dict:
    import glob
    import os

    from cadet_d2.bench.inputs import loader_throughput, write_llvip_like, write_pairs_index

    npy_root, pairs_root = write_llvip_like(os.path.join(args.workdir, "synthetic"), n=args.iters * 2)
    roots = [("synthetic", npy_root), ("synthetic", pairs_root)]
    if args.llvip:
        vis = sorted(glob.glob(os.path.join(args.llvip, "visible", "*", "*.jpg")))
        pairs = [(os.path.splitext(os.path.basename(v))[0], v, v.replace(os.sep + "visible" + os.sep,
                                                                          os.sep + "infrared" + os.sep)) for v in vis]
        roots.append(("LLVIP sample", write_pairs_index(os.path.join(args.workdir, "llvip"), pairs)))
    base = ["MODEL.DEVICE", "cpu", "CADET.INPUT.MODALITIES", "['rgb','thermal']", "MODEL.PIXEL_MEAN", "[0,0,0,0]",
            "MODEL.PIXEL_STD", "[1,1,1,1]", "CADET.DATA.TEST_SETS", "[]", "CADET.DATA.UNLABELED", "negative",
            "INPUT.MAX_SIZE_TRAIN", "1333", "DATASETS.TRAIN", "('synth_train',)", "DATASETS.TEST", "()"]
    rows = loader_throughput(lambda opts: load_config(args.config_file, base + args.opts + opts), roots,
                             args.loader_sides, limit=args.iters * 2, repeats=3)
    return {"mode": "loader", "rows": rows, "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
            "load_avg": os.getloadavg()[0]}


def _plan_mode(cfg, args) -> dict:
    from cadet_d2.bench.planner import (format_plan, measure_models, models_from_json, models_to_json, plan,
                                        time_settings)

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {unknown}; choose from {list(SETTINGS)}")
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            models = models_from_json(json.load(f)["models"], settings, args.from_json)
    else:
        models = measure_models(cfg, settings, *args.size, batches=tuple(args.plan_batches),
                                fixed_size=args.fixed_size, compute=args.compute,
                                log=lambda m: print(m, file=sys.stderr))
    costs = None
    if args.time_rounds:
        costs = time_settings(cfg, settings, args.plan_batches[0], *(args.fixed_size or args.size), args.time_rounds)
    result = plan(models, args.gpu_memory, args.effective_batch, args.gpus, costs)
    print(format_plan(result, models), file=sys.stderr)
    return {"mode": "plan", "models": models_to_json(models), "plan": result, "costs": costs,
            "size": list(args.size), "fixed_size": args.fixed_size, "computed": args.compute}


def _ops_mode(cfg, args) -> dict:
    from cadet_d2.engine.precision import cpu_has_fast_bf16
    from cadet_d2.utils.machine import machine_label
    from cadet_d2.utils.op_benchmark import format_op_table, mit_ops, op_table

    size = cfg.CADET.BACKBONE.SIZE
    ops = mit_ops(size, *args.size, batch=args.batch, fpn_channels=cfg.MODEL.FPN.OUT_CHANNELS,
                  rois=cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, pooler=cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION,
                  fc_dim=cfg.MODEL.ROI_BOX_HEAD.FC_DIM)
    rows = op_table(ops, rounds=args.iters, warmup=args.warmup)
    print(f"bf16 autocast against fp32, op by op: one stream of MiT-{size}, {args.batch} x {args.size[0]} x "
          f"{args.size[1]}, forward + backward, {torch.get_num_threads()} threads, {machine_label()}\n"
          + format_op_table(rows), file=sys.stderr)
    return {"mode": "ops", "mit": size, "cpu": machine_label(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_bf16": cpu_has_fast_bf16(), "rows": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--mode", choices=("train", "infer", "input", "loader", "deploy", "plan", "ops", "check_data"),
                   default="train", help="deploy: one-image inference of PyTorch vs the exported files of "
                   "--export-dir; ops: fp32 against bf16 autocast, op by op, at the config's MiT shapes (CPU)")
    p.add_argument("--export-dir", default="", help="deploy mode: export folder (tools/export.py)")
    p.add_argument("--runtimes", default="pytorch,onnx,onnx_int8,torchscript,openvino,openvino_bf16,openvino_int8",
                   help="deploy mode: comma-separated runtimes to time (those the folder has)")
    p.add_argument("--image", default="", help="deploy mode: an (H, W, C) .npy image instead of a random --size one")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=2, help="images per step (per micro-batch with SOLVER.ACCUM_STEPS)")
    p.add_argument("--size", nargs=2, type=int, default=(301, 391), metavar=("H", "W"))
    p.add_argument("--flops", action="store_true", help="also count GFLOPs per image (fvcore)")
    p.add_argument("--memory", action="store_true", help="also the peak live tensor memory of one step")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also the top N ops of one step (profiler)")
    p.add_argument("--step-profile", default="", metavar="FILE",
                   help="train/infer mode: write every op of one extra step (per setting with --vs) to FILE")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--vs", action="append", default=[], metavar="'KEY VALUE ...'",
                   help="train mode: also time the config with these extra overrides, alternating steps with "
                        "the base config in one process (repeatable); reports each one's step time ratio")
    p.add_argument("--workdir", default="/tmp/cadet_loader_bench", help="loader mode: where the data are written")
    p.add_argument("--llvip", default="", help="loader mode: LLVIP folder (visible/, infrared/) to time as well")
    p.add_argument("--loader-sides", nargs="+", type=int, default=[512, 640],
                   help="loader mode: training shorter sides (INPUT.MIN_SIZE_TRAIN) timed")
    p.add_argument("--gpu-memory", type=float, default=0, metavar="GIB", help="plan mode: memory of one GPU (GiB)")
    p.add_argument("--effective-batch", type=int, default=0,
                   help="plan mode: images per optimizer step over all GPUs; prints the cheapest setting that fits")
    p.add_argument("--gpus", type=int, default=1, help="plan mode: number of GPUs (DDP)")
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                   help=f"plan mode: comma-separated settings to measure, of {','.join(SETTINGS)}")
    p.add_argument("--plan-batches", nargs=2, type=int, default=(1, 2), metavar=("B1", "B2"),
                   help="plan mode: the two batch sizes measured for the fit")
    p.add_argument("--fixed-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="plan mode: fit the fixed memory at this smaller size; only batch 1 runs at --size")
    p.add_argument("--from-json", default="", metavar="FILE",
                   help="plan mode: reuse the memory models of an earlier plan's JSON instead of measuring")
    p.add_argument("--compute", action="store_true",
                   help="plan mode: run the arithmetic too (default: skipped, same tensor sizes)")
    p.add_argument("--time-rounds", type=int, default=0, metavar="N",
                   help="plan mode: also time the settings (real steps, alternating, N rounds at batch B1 and "
                        "the --fixed-size or --size) for their step-time cost")
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if args.vs and args.mode != "train":
        p.error("--vs compares training steps: use it with --mode train")
    if args.step_profile and args.mode not in ("train", "infer"):
        p.error("--step-profile profiles a train or infer step")
    if (args.mode == "deploy") != bool(args.export_dir):
        p.error("--export-dir goes with --mode deploy (and deploy needs it)")
    if (args.mode == "plan") != (args.gpu_memory > 0):
        p.error("--gpu-memory goes with --mode plan (and plan needs it)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "check_data":
        import os

        from cadet_d2.bench.inputs import check_data_speed
        from cadet_d2.utils.machine import machine_label

        result = {"mode": "check_data", "cpu": machine_label(), "load_avg": os.getloadavg()[0],
                  "rows": check_data_speed(os.path.join(args.workdir, "check_data"), n=args.iters)}
        print(json.dumps(result, indent=2))
        if args.json:
            atomic_write_json(args.json, result)
        return result
    if args.mode == "loader":
        result = _loader_mode(args)
        result["config"], result["opts"] = args.config_file, args.opts
        print(json.dumps(result, indent=2))
        if args.json:
            atomic_write_json(args.json, result)
        return result
    cfg = load_config(args.config_file, args.opts)
    if args.mode == "input":
        result = _input_mode(cfg, args)
    elif args.mode == "deploy":
        from cadet_d2.export.benchmark import benchmark_runtimes

        result = benchmark_runtimes(cfg, args.export_dir, *args.size, iters=args.iters, warmup=args.warmup,
                                    threads=args.threads or 1, runtimes=args.runtimes.split(","), image_file=args.image)
    elif args.mode == "plan":
        result = _plan_mode(cfg, args)
    elif args.mode == "ops":
        result = _ops_mode(cfg, args)
    elif args.vs:
        from cadet_d2.bench.speed import paired_benchmark

        cfgs = {"base": cfg, **{v: load_config(args.config_file, args.opts + v.split()) for v in args.vs}}
        result = paired_benchmark(cfgs, args.iters, args.warmup, args.batch, *args.size,
                                  step_profile=args.step_profile)
        for name, message in result["diverged"].items():
            print(f"setting {name!r} diverged (dropped from the rounds): {message}", file=sys.stderr)
    else:
        result = benchmark(cfg, args.mode, args.iters, args.warmup, args.batch, *args.size, flops=args.flops,
                           memory=args.memory, profile=args.profile, step_profile=args.step_profile)
    result["config"] = args.config_file
    result["opts"] = args.opts
    text = json.dumps(result, indent=2)
    print(text)
    if args.profile and "profile" in result:
        print("\n".join(f"{r['percent']:5.1f}%  {r['self_cpu_ms']:9.1f} ms  {r['calls']:6d}  {r['op']}"
                        for r in result["profile"]), file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    run_tool(main, also=(MissingPackageError,))  # bad path, config key or value: "error: ...", no traceback
