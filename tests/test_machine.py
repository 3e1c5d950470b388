"""The machine label of figures: /proc/cpuinfo parsed, the label's parts, and the study report
naming the machines of its runs (a warning when they are several)."""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import torch

from conftest import make_tiny_root

from cadet_d2.study import load_study, make_plan
from cadet_d2.study.rundir import write_status
from cadet_d2.utils.machine import cpu_info, cpu_label, machine_label, parse_cpuinfo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH_SMALL = os.path.join(REPO, "configs", "studies", "synth_small.yaml")

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile

processor\t: 1
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu avx2
"""


def test_parse_cpuinfo_reads_the_first_processor():
    info = parse_cpuinfo(CPUINFO)
    assert info == {"name": "Intel(R) Xeon(R) Platinum 8480+", "family": "6", "model": "143",
                    "flags": ("fpu", "avx2", "avx512f", "avx512_bf16", "amx_tile")}
    assert parse_cpuinfo("") == {"name": "", "family": "", "model": "", "flags": ()}


def test_cpu_label_names_family_isa_and_bf16_flags():
    xeon = parse_cpuinfo(CPUINFO)
    assert cpu_label(xeon, "AVX512", 2) == "Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143, AVX512 avx512_bf16), 2 CPUs"
    zen3 = parse_cpuinfo(CPUINFO.split("\n\n")[1])
    assert cpu_label(zen3, "AVX2", 2) == "AMD EPYC (family 25 model 1, AVX2), 2 CPUs"
    assert cpu_label({"name": "arm64", "family": "", "model": "", "flags": ()}, "DEFAULT", 8) == "arm64 (DEFAULT), 8 CPUs"


def test_machine_label_of_this_machine():
    label = machine_label()
    assert label.startswith(cpu_info()["name"])
    assert torch.backends.cpu.get_cpu_capability() in label and f"{os.cpu_count()} CPUs" in label
    assert ("GPU: " in label) == torch.cuda.is_available()


def _finished(run_dir: str, machine: str, command: list[str]) -> None:
    os.makedirs(run_dir, exist_ok=True)
    open(os.path.join(run_dir, "model_final.pth"), "wb").close()
    with open(os.path.join(run_dir, "eval_metrics.json"), "w") as f:
        json.dump({"datasets": {"synth_test": {"AP": 10.0}}, "weights": "", "machine": machine}, f)
    write_status(run_dir, {"state": "done", "command": command,
                           "attempts": [{"machine": machine, "wall_s": 1.0, "exit_code": 0}]})


def test_report_names_the_machines_and_warns_when_several(tmp_path):
    from cadet_d2.study.cli import main

    root = make_tiny_root(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    opts = ["CADET.DATA.ROOT", root]
    plan = make_plan(dataclasses.replace(load_study(SYNTH_SMALL), output=out), opts)
    runs = [r for r in plan.runs if not r.arm.pending][:3]
    args = ["report", SYNTH_SMALL, "--output", out, "--no-plots", "--resamples", "10", "--opts", *opts]
    for run in runs:
        _finished(run.dir, "CPU A (AVX2), 2 CPUs", [sys.executable, *plan.command(run)])
    assert main(args) == 0
    md = open(os.path.join(out, "report", "report.md")).read()
    assert "- Machines: CPU A (AVX2), 2 CPUs (3 runs)." in md
    assert "come from 2 machines" not in md  # (the fake runs lack metrics: the report warns of that)

    _finished(runs[2].dir, "CPU B (AVX512), 2 CPUs", [sys.executable, *plan.command(runs[2])])
    assert main(args) == 0
    md = open(os.path.join(out, "report", "report.md")).read()
    assert "- Machines: CPU A (AVX2), 2 CPUs (2 runs); CPU B (AVX512), 2 CPUs (1 run)." in md
    assert "**Warning: the finished runs come from 2 machines" in md
    runs_csv = open(os.path.join(out, "report", "runs.csv")).read()
    assert "CPU B (AVX512), 2 CPUs" in runs_csv
