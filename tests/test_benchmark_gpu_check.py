"""`make gpu-check`'s CPU-side parts: argument parsing, the matrix, the table writer, and the whole
path on a tiny config on the CPU (the CUDA tests themselves are tests/test_cuda.py)."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from cadet_d2.bench.gpu_check import Run, matrix, table

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _cli():
    spec = importlib.util.spec_from_file_location("gpu_check_cli", os.path.join(HERE, "tools", "gpu_check.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_arguments():
    cli = _cli()
    args = cli.parse_args([])
    assert args.precisions == ["bf16", "fp16"] and args.doc == "docs/gpu_benchmarks.md" and not args.tiny
    assert cli.parse_args(["--precisions", "fp32"]).precisions == ["fp32"]
    with pytest.raises(SystemExit):
        cli.parse_args(["--precisions", "int8"])


def test_matrix_covers_the_issue_runs():
    runs = matrix()
    table_runs = [(r.name, r.precision, r.mode) for r in runs]
    for fusion in ("cssa", "frm_ffm"):
        for prec in ("bf16", "fp16"):
            for mode in ("train", "infer"):
                assert (f"MiT-b1 {fusion}", prec, mode) in table_runs
    assert all(r.batch == 16 and r.size == (320, 416) for r in runs if r.name.startswith("MiT-b1"))
    compiled = [r for r in runs if "CADET.BACKBONE.COMPILE" in r.opts]
    big = [r for r in runs if r.mode == "plan"]
    assert len(compiled) == 1 and len(big) == 1 and big[0].size == (800, 1040) and "b5" in big[0].config
    assert len(matrix(tiny=True, compile_check=False, big=False)) == 8


def test_table_names_the_device_and_every_run():
    runs = [Run("A", "c", [], "train", 16, (320, 416), "bf16", result={"images_per_s": 312.4, "median_step_s": 0.0512,
                                                                       "peak_memory_mb": 9000.0, "first_step_s": 3.0}),
            Run("B", "c", [], "infer", 16, (320, 416), "fp16", result={"skipped": "time budget (300 s) spent"}),
            Run("C", "c", [], "plan", 2, (800, 1040), "bf16", result={"images_per_s": 5.0, "median_step_s": 0.4,
                                                                      "peak_memory_mb": 30000.0,
                                                                      "predicted_peak_mb": 29000.0,
                                                                      "peak_tensor_mb": 29500.0}),
            Run("D", "c", [], "train", 16, (320, 416), "fp16", result={"failed": "RuntimeError: a | b"})]
    text = table(runs, "NVIDIA H200 (CUDA 12.8)", tests="11 passed")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| run")]
    assert "NVIDIA H200" in text.splitlines()[0] and "11 passed" in text and len(rows) == 4
    assert "| 312.4 | 0.051 | 9000 |" in rows[0] and "first step 3.0 s" in rows[0]
    assert "time budget" in rows[1] and "| – |" in rows[1]
    assert "| 29000 (tensor peak 29500) |" in rows[2]
    assert "RuntimeError: a / b" in rows[3] and rows[3].count("|") == rows[0].count("|")


def test_tiny_matrix_runs_on_the_cpu(tmp_path):
    doc, out = tmp_path / "gpu.md", tmp_path / "out"
    r = _cli().main(["--tiny", "--skip-tests", "--precisions", "fp32,fp16", "--no-compile", "--doc", str(doc),
                     "--out", str(out)])
    runs = {(x["name"], x["precision"], x["mode"]): x["result"] for x in r["runs"]}
    assert len(runs) == 9
    for (name, prec, mode), res in runs.items():
        if prec == "fp16":  # the CPU cannot: recorded, not lost
            assert "needs MODEL.DEVICE cuda" in res["skipped"], res
        else:
            assert res.get("images_per_s", 0) > 0, (name, mode, res)
    plan = runs[("MiT-b5 frm_ffm, planner", "fp32", "plan")]
    assert plan["predicted_peak_mb"] > 0 and plan["peak_tensor_mb"] > 0
    assert abs(plan["predicted_peak_mb"] - plan["peak_tensor_mb"]) <= 0.15 * plan["peak_tensor_mb"]
    text = doc.read_text()
    assert "GPU check: CPU:" in text and "not run (--skip-tests)" in text
    assert json.loads((out / "results.json").read_text())["device"].startswith("CPU")
