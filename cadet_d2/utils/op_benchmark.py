"""fp32 against bf16 autocast on the CPU, op by op, at a MiT detector's training shapes.

A whole training step says *whether* bf16 pays on a CPU; this says *which* ops do not.
``mit_ops(size, height, width, batch)`` lists the ops a dual-stream MiT + FPN + box head step
is made of (the patch-embedding and spatial-reduction convolutions, the depth-wise 3x3 conv of
Mix-FFN, the MLP linears, efficient self-attention, LayerNorm, GELU, an FPN conv, the box
head's first FC) at the shapes of that step. ``op_table(ops)`` times forward + backward of
each, fp32 and under ``torch.autocast("cpu", torch.bfloat16)``, alternating the two, and
names what ran in each: the aten op with the most self time (``aten::_slow_conv2d_forward``
is PyTorch's reference convolution, used where oneDNN has no kernel) and the oneDNN
implementations seen (from oneDNN's verbose output; ``ref`` marks oneDNN's reference code).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import MIT_HEADS, MIT_SPECS, MIT_SR_RATIOS
from .timing import alternating_timings, profile_step, upper_median


@dataclass
class Op:
    """One op: ``build()`` returns (module or function, inputs that need grad)."""

    name: str
    shape: str
    build: Callable[[], tuple[Callable, list[torch.Tensor]]]


def _conv(cin: int, cout: int, k: int, stride: int, pad: int, groups: int, n: int, h: int, w: int):
    def build():
        return nn.Conv2d(cin, cout, k, stride, pad, groups=groups), [torch.randn(n, cin, h, w, requires_grad=True)]
    return build


def _module(make: Callable[[], nn.Module], *shape: int):
    def build():
        return make(), [torch.randn(*shape, requires_grad=True)]
    return build


def _attention(n: int, heads: int, q_len: int, kv_len: int, d: int):
    def build():
        q = torch.randn(n, heads, q_len, d, requires_grad=True)
        kv = [torch.randn(n, heads, kv_len, d, requires_grad=True) for _ in range(2)]
        return F.scaled_dot_product_attention, [q, *kv]
    return build


def mit_ops(size: str = "b1", height: int = 320, width: int = 416, batch: int = 2,
            stages: tuple[int, ...] = (1, 2, 3, 4), heads: bool = True, fpn_channels: int = 256,
            rois: int = 512, pooler: int = 7, fc_dim: int = 1024) -> list[Op]:
    """The ops of one stream of a MiT-``size`` step on (batch, 3, height, width) images, stage by
    stage (1-4); with ``heads`` also the FPN's 3x3 output conv at stride 4 (``fpn_channels``) and
    the box head's first FC (``rois`` per image, ``pooler`` x ``pooler`` RoI features ->
    ``fc_dim``): Detectron2's defaults."""
    dims = MIT_SPECS[size]["embed_dims"]
    # (h, w) of each stage's output: strides 4, 8, 16, 32, each patch embedding rounding up
    sides = [(-(-height // 4), -(-width // 4))]
    for _ in range(3):
        sides.append((-(-sides[-1][0] // 2), -(-sides[-1][1] // 2)))
    ops = []
    for s in stages:
        i = s - 1
        c, nh, sr = dims[i], MIT_HEADS[i], MIT_SR_RATIOS[i]
        (h, w), (ih, iw) = sides[i], ((height, width) if i == 0 else sides[i - 1])
        cin, k, stride = (3, 7, 4) if i == 0 else (dims[i - 1], 3, 2)
        tokens, kv = h * w, (-(-h // sr)) * (-(-w // sr))
        ops += [
            Op(f"stage {s} patch embed conv {k}x{k}/{stride}", f"{batch}x{cin}x{ih}x{iw} -> {c}",
               _conv(cin, c, k, stride, k // 2, 1, batch, ih, iw)),
            Op(f"stage {s} LayerNorm", f"{batch}x{tokens}x{c}", _module(lambda c=c: nn.LayerNorm(c), batch, tokens, c)),
            Op(f"stage {s} linear q/kv/proj", f"{batch}x{tokens}x{c} -> {c}",
               _module(lambda c=c: nn.Linear(c, c), batch, tokens, c)),
            Op(f"stage {s} attention (sr {sr})", f"{batch}x{nh}x{tokens}x{c // nh} over {kv}",
               _attention(batch, nh, tokens, kv, c // nh)),
            Op(f"stage {s} MLP linear", f"{batch}x{tokens}x{c} -> {4 * c}",
               _module(lambda c=c: nn.Linear(c, 4 * c), batch, tokens, c)),
            Op(f"stage {s} Mix-FFN depth-wise conv 3x3", f"{batch}x{4 * c}x{h}x{w}",
               _conv(4 * c, 4 * c, 3, 1, 1, 4 * c, batch, h, w)),
            Op(f"stage {s} GELU", f"{batch}x{tokens}x{4 * c}", _module(nn.GELU, batch, tokens, 4 * c)),
        ]
        if sr > 1:
            ops.append(Op(f"stage {s} spatial-reduction conv {sr}x{sr}/{sr}", f"{batch}x{c}x{h}x{w}",
                          _conv(c, c, sr, sr, 0, 1, batch, h, w)))
    if heads:
        (h, w), c, n = sides[0], fpn_channels, fpn_channels * pooler ** 2
        ops += [
            Op("FPN output conv 3x3 (stride 4)", f"{batch}x{c}x{h}x{w}", _conv(c, c, 3, 1, 1, 1, batch, h, w)),
            Op(f"box head FC {n} -> {fc_dim}", f"{rois * batch}x{n}",
               _module(lambda: nn.Linear(n, fc_dim), rois * batch, n)),
        ]
    return ops


def _step(fn: Callable, inputs: list[torch.Tensor], bf16: bool) -> Callable[[], None]:
    def run() -> None:
        for t in inputs:
            t.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = fn(*inputs)
        out.float().sum().backward()
    return run


@contextlib.contextmanager
def _stdout_to(path: str):
    """Send the process's C-level stdout (file descriptor 1) to ``path`` (oneDNN prints there)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved, fd = os.dup(1), os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(fd)
        os.close(saved)


def parse_onednn_verbose(text: str) -> list[str]:
    """``kind:implementation`` of each primitive oneDNN executed, in first-seen order, from its
    verbose lines (``onednn_verbose,[...,]primitive,exec,cpu,<kind>,<implementation>,...``)."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        fields = line.strip().split(",")
        if not fields[0].endswith("_verbose") or "exec" not in fields:
            continue
        i = fields.index("exec")
        if len(fields) > i + 3 and fields[i + 1] == "cpu":
            seen.setdefault(f"{fields[i + 2]}:{fields[i + 3]}", None)
    return list(seen)


def _kernels(run: Callable[[], None]) -> tuple[str, list[str]]:
    """The aten op with the most self CPU time in one ``run()``, and the oneDNN kernels it used."""
    ops = profile_step(run, torch.device("cpu"), top=None)
    top = next((r["op"] for r in ops if r["op"].startswith("aten::")), "")
    verbose = getattr(torch.backends.mkldnn, "verbose", None)
    if verbose is None or not sys.platform.startswith("linux"):
        return top, []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "onednn.txt")
        with _stdout_to(path), verbose(torch.backends.mkldnn.VERBOSE_ON):
            run()
        with open(path, encoding="utf-8", errors="replace") as f:
            return top, parse_onednn_verbose(f.read())


def op_table(ops: list[Op], rounds: int = 5, warmup: int = 1, kernels: bool = True) -> list[dict]:
    """Per op: median fp32 and bf16 forward + backward (ms, alternating the two), ``speed``
    (fp32 time / bf16 time: > 1 means bf16 is faster) and, with ``kernels``, what ran in each
    (``fp32_top_aten_op``, ``fp32_onednn``, ``bf16_top_aten_op``, ``bf16_onednn``)."""
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        return [_op_row(op, rounds, warmup, kernels) for op in ops]


def _op_row(op: Op, rounds: int, warmup: int, kernels: bool) -> dict:
    torch.manual_seed(0)
    fn, inputs = op.build()
    runs = {"fp32": _step(fn, inputs, False), "bf16": _step(fn, inputs, True)}
    times, _ = alternating_timings(runs, rounds, warmup)
    fp32, bf16 = (1e3 * upper_median(times[k]) for k in ("fp32", "bf16"))
    row = {"op": op.name, "shape": op.shape, "fp32_ms": fp32, "bf16_ms": bf16, "speed": fp32 / bf16}
    if kernels:
        for name, run in runs.items():
            row[f"{name}_top_aten_op"], row[f"{name}_onednn"] = _kernels(run)
    return row


def totals(rows: list[dict]) -> tuple[float, float]:
    """Summed (fp32 ms, bf16 ms) of :func:`op_table`'s rows."""
    return sum(r["fp32_ms"] for r in rows), sum(r["bf16_ms"] for r in rows)


def format_op_table(rows: list[dict]) -> str:
    """A markdown table of :func:`op_table`'s rows, with the totals."""
    def kernels(r: dict, name: str) -> str:
        return f"{r.get(name + '_top_aten_op', '')} [{', '.join(r.get(name + '_onednn', [])) or '-'}]"

    lines = ["| op | shape | fp32 ms | bf16 ms | bf16 speed | fp32: top aten op [oneDNN kernels] | bf16: the same |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['shape']} | {r['fp32_ms']:.2f} | {r['bf16_ms']:.2f} | "
                     f"{r['speed']:.2f}x | {kernels(r, 'fp32')} | {kernels(r, 'bf16')} |")
    fp32, bf16 = totals(rows)
    lines.append(f"| **all** | | {fp32:.1f} | {bf16:.1f} | **{fp32 / bf16:.2f}x** | | |")
    return "\n".join(lines)

