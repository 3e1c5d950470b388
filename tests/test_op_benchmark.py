"""fp32 against bf16 autocast op by op (cadet_d2/utils/op_benchmark.py, ``tools/benchmark.py
--mode ops``), without the profiler's log lines."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch

from cadet_d2.utils.op_benchmark import mit_ops, op_table, parse_onednn_verbose

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mit_ops_have_the_step_shapes():
    """MiT-b1 at 320 x 416: stage 1 has 80 x 104 tokens attending to 10 x 13 (reduction 8), stage
    4 has 10 x 13 tokens and no spatial reduction; Mix-FFN's conv is depth-wise on 4C channels."""
    ops = {op.name: op for op in mit_ops("b1", 320, 416, batch=2)}
    assert len(ops) == 4 * 7 + 3 + 2
    assert ops["stage 1 attention (sr 8)"].shape == "2x1x8320x64 over 130"
    assert ops["stage 4 attention (sr 1)"].shape == "2x8x130x64 over 130"
    assert "stage 4 spatial-reduction conv 1x1/1" not in ops
    assert ops["stage 2 patch embed conv 3x3/2"].shape == "2x64x80x104 -> 128"
    assert ops["box head FC 12544 -> 1024"].shape == "1024x12544"
    conv, (x,) = ops["stage 3 Mix-FFN depth-wise conv 3x3"].build()
    assert conv.groups == conv.in_channels == 1280 and tuple(x.shape) == (2, 1280, 20, 26)


def test_every_op_runs_forward_and_backward_at_its_shape():
    """Each op of a tiny MiT-b0 step builds, and its output has the shape the next op takes."""
    ops = {op.name: op for op in mit_ops("b0", 32, 48, batch=1, fpn_channels=8, rois=4, fc_dim=16)}
    fn, (x,) = ops["stage 1 patch embed conv 7x7/4"].build()
    assert tuple(fn(x).shape) == (1, 32, 8, 12)
    fn, (x,) = ops["stage 2 patch embed conv 3x3/2"].build()
    assert tuple(fn(x).shape) == (1, 64, 4, 6)
    fn, (q, k, v) = ops["stage 1 attention (sr 8)"].build()
    assert tuple(q.shape) == (1, 1, 96, 32) and tuple(k.shape) == (1, 1, 2, 32)
    for op in ops.values():
        fn, inputs = op.build()
        fn(*inputs).float().sum().backward()
        assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in inputs), op.name


def test_op_table_times_both_precisions_and_leaves_the_random_stream_alone():
    ops = mit_ops("b0", 32, 48, batch=1, stages=(1,), heads=False)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    rows = op_table(ops, rounds=1, warmup=0, kernels=True)
    assert torch.equal(torch.rand(3), expected)
    assert [r["op"] for r in rows] == [op.name for op in ops]
    for r in rows:
        assert r["fp32_ms"] > 0 and r["bf16_ms"] > 0 and math.isclose(r["speed"], r["fp32_ms"] / r["bf16_ms"])
        for name in ("fp32", "bf16"):
            assert r[f"{name}_top_aten_op"].startswith("aten::") and isinstance(r[f"{name}_onednn"], list)
    # fp32 convolutions run on oneDNN (PyTorch's mkldnn convolution) wherever PyTorch has it
    conv = rows[0]
    if torch.backends.mkldnn.is_available():
        assert any(k.startswith("convolution:") for k in conv["fp32_onednn"]), conv


def test_parse_onednn_verbose_names_each_kernel_once():
    text = "\n".join([
        "onednn_verbose,info,cpu,isa:Intel AVX2",
        "onednn_verbose,primitive,exec,cpu,convolution,jit:avx2,forward_training,src_f32::blocked:abcd::f0,,"
        "alg:convolution_direct,mb2_ic3oc64_ih320oh80kh7sh4ph3_iw416ow104kw7sw4pw3,1.2",
        "onednn_verbose,v1,1733090000.1,primitive,exec,cpu,convolution,ref:any,backward_data,src:bf16,,,2.0",
        "onednn_verbose,primitive,exec,cpu,convolution,jit:avx2,forward_training,src_f32,,,1.1",
        "onednn_verbose,primitive,create:cache_miss,cpu,reorder,jit:uni,undef,,,0.1",
        "some other line, exec, cpu",
    ])
    assert parse_onednn_verbose(text) == ["convolution:jit:avx2", "convolution:ref:any"]


def test_cli_ops_mode_writes_the_table(tmp_path):
    out = tmp_path / "ops.json"
    cmd = [sys.executable, "tools/benchmark.py", "--config-file", "configs/demo.yaml", "--mode", "ops",
           "--size", "32", "48", "--batch", "1", "--iters", "1", "--warmup", "0", "--threads", "1",
           "--json", str(out), "MODEL.FPN.OUT_CHANNELS", "8", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "4",
           "MODEL.ROI_BOX_HEAD.FC_DIM", "16"]
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}  # the tool itself must quieten it
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**env, "PYTHONPATH": REPO})
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "ops" and result["mit"] == "b0" and result["threads"] == 1
    assert len(result["rows"]) == 4 * 7 + 3 + 2 and result["rows"][-1]["op"] == "box head FC 392 -> 16"
    assert "| **all** |" in r.stderr and "bf16 autocast against fp32, op by op: one stream of MiT-b0" in r.stderr
    # no profiler log lines (kineto's "USDT: ... profiler_start/stop", "gpuGetDeviceCount failed")
    assert "profiler_start" not in r.stderr + r.stdout and "gpuGetDeviceCount" not in r.stderr + r.stdout
