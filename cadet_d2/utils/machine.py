"""The machine a figure came from: the CPU's model, family and vector ISA, its core count, the GPU.

A ratio of two figures only counts when both came from one machine, and a CPU's marketing name
alone ("AMD EPYC") does not tell a Zen 3 from a Zen 5. So benchmarks, run status files and
metrics files record :func:`machine_label`, and the study report names the machines its runs
ran on.
"""
from __future__ import annotations

import functools
import os
import platform

import torch

# CPU flags that decide whether bf16 autocast can be fast (oneDNN's bf16 kernels)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_CPUINFO_KEYS = {"model name": "name", "cpu family": "family", "model": "model", "flags": "flags"}


def parse_cpuinfo(text: str) -> dict:
    """``{"name", "family", "model", "flags"}`` of the first processor of ``/proc/cpuinfo``'s
    text ("" and () where a key is absent)."""
    info: dict = {"name": "", "family": "", "model": "", "flags": ()}
    for line in text.splitlines():
        if not line.strip():
            break  # the blank line after the first processor
        key, _, value = line.partition(":")
        name = _CPUINFO_KEYS.get(key.strip())
        if name:
            info[name] = tuple(value.split()) if name == "flags" else value.strip()
    return info


@functools.lru_cache(maxsize=None)
def cpu_info() -> dict:
    """:func:`parse_cpuinfo` of this machine; the name falls back to ``platform``'s strings."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = parse_cpuinfo("")
    info["name"] = info["name"] or platform.processor() or platform.machine()
    return info


def cpu_label(info: dict | None = None, capability: str | None = None, cpus: int | None = None) -> str:
    """E.g. ``AMD EPYC (family 25 model 1, AVX2), 2 CPUs``; ``capability`` is PyTorch's vector ISA
    (``torch.backends.cpu.get_cpu_capability()``), followed by the bf16 flags the CPU has."""
    info = cpu_info() if info is None else info
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    cpus = os.cpu_count() if cpus is None else cpus
    detail = [f"family {info['family']} model {info['model']}"] if info["family"] else []
    detail.append(" ".join([capability, *[f for f in BF16_FLAGS if f in info["flags"]]]))
    return f"{info['name']} ({', '.join(detail)}), {cpus} CPUs"


def machine_label() -> str:
    """:func:`cpu_label`, then the GPUs (name and count) when CUDA sees any."""
    label = cpu_label()
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        label += f"; GPU: {torch.cuda.get_device_name(0)}" + (f" x{n}" if n > 1 else "")
    return label
