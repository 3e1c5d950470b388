#!/usr/bin/env python
"""One command for a GPU machine (`make gpu-check`, <= 8 min on one GPU): the CUDA tests, then the
benchmark matrix, written as Markdown (default docs/gpu_benchmarks.md) and JSON.

    python tools/gpu_check.py                       # CUDA tests + matrix, writes docs/gpu_benchmarks.md
    python tools/gpu_check.py --skip-tests --budget-s 300
    python tools/gpu_check.py --tiny --skip-tests --doc /tmp/t.md --out /tmp/gc   # the path on a CPU, seconds

The matrix (cadet_d2/bench/gpu_check.py): dual MiT-b1 + CSSA and + FRM+FFM at 320 x 416, batch 16,
bf16 and fp16, train and inference images/s and peak memory; CADET.BACKBONE.COMPILE on; dual
MiT-b5 FRM+FFM at 800 x 1040: the memory planner's prediction next to the measured peak.
"""
import argparse
import datetime
import os
import subprocess
import sys
import time

from cadet_d2.bench.gpu_check import device_name, matrix, run_matrix, table
from cadet_d2.utils.io import atomic_write_json


def run_cuda_tests(timeout_s: int) -> str:
    """`pytest -m cuda tests/test_cuda.py`; its summary line (or why it did not finish)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"did not finish in {timeout_s} s"
    print(p.stdout[-4000:], p.stderr[-2000:], sep="\n", file=sys.stderr)
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    return (lines[-1].strip("= ") if lines else "no output") + ("" if p.returncode in (0, 5) else f" (exit {p.returncode})")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="output/gpu_check", help="folder for results.json")
    p.add_argument("--doc", default="docs/gpu_benchmarks.md", help="Markdown file the table is written to")
    p.add_argument("--precisions", default="bf16,fp16", help="comma-separated, of fp32, bf16, fp16")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="no new benchmark run starts after this many seconds of the matrix")
    p.add_argument("--tests-timeout-s", type=int, default=150)
    p.add_argument("--skip-tests", action="store_true", help="only the benchmark matrix")
    p.add_argument("--no-compile", action="store_true", help="leave out the CADET.BACKBONE.COMPILE run")
    p.add_argument("--no-big", action="store_true", help="leave out the MiT-b5 at 800 planner run")
    p.add_argument("--tiny", action="store_true", help="MiT-b0 at 64 x 96 for every run (a CPU check of the path)")
    args = p.parse_args(argv)
    args.precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    bad = [s for s in args.precisions if s not in ("fp32", "bf16", "fp16")]
    if bad or not args.precisions:
        p.error(f"--precisions: {bad or 'none given'}; choose from fp32, bf16, fp16")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    tests = "not run (--skip-tests)" if args.skip_tests else run_cuda_tests(args.tests_timeout_s)
    runs = run_matrix(matrix(tuple(args.precisions), tiny=args.tiny, compile_check=not args.no_compile,
                             big=not args.no_big), budget_s=args.budget_s,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    device = device_name()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "# GPU benchmarks\n\nWritten by `make gpu-check`; how it works: [benchmarks.md](benchmarks.md#gpu-check).\n\n"
    text += table(runs, device, tests, when)
    os.makedirs(os.path.dirname(os.path.abspath(args.doc)), exist_ok=True)
    with open(args.doc, "w", encoding="utf-8") as f:
        f.write(text)
    result = {"device": device, "tests": tests, "when": when, "total_s": time.perf_counter() - start,
              "runs": [{"name": r.name, "config": r.config, "opts": r.opts, "mode": r.mode, "batch": r.batch,
                        "size": list(r.size), "precision": r.precision, "result": r.result} for r in runs]}
    atomic_write_json(os.path.join(args.out, "results.json"), result)
    print(text)
    return result


if __name__ == "__main__":
    main()
