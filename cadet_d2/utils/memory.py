"""Peak tensor memory on any device, CPU included: live tensor storages counted as ops run.

PyTorch reports peak memory on CUDA (``torch.cuda.max_memory_allocated``) but has no such
statistic for the CPU allocator, and a process's peak RSS mixes in the Python heap, libraries
and allocator caching. :class:`TensorMemoryTracker` is a ``TorchDispatchMode``: every tensor an
op returns has its storage counted once (``nbytes``) until Python frees it (a weak reference
callback), so ``peak_bytes`` is the most tensor memory alive at once: weights, gradients,
optimizer state, saved activations and temporaries (whatever runs under the mode, autograd's
backward included). Allocator rounding and non-tensor workspace (e.g. oneDNN scratch) are not
counted. Tensors that exist before the mode starts are added with :meth:`track`.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.weak import WeakIdKeyDictionary


class TensorMemoryTracker(TorchDispatchMode):
    """Count live tensor storages of ``device_type`` and their peak (bytes), while active."""

    def __init__(self, device_type: str = "cpu"):
        super().__init__()
        self.device_type = device_type
        self.live_bytes = 0
        self.peak_bytes = 0
        self._storages: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: list[weakref.ref] = []

    def _free(self, nbytes: int, ref: weakref.ref) -> None:
        self.live_bytes -= nbytes

    def _add(self, t: torch.Tensor) -> None:
        if t.device.type != self.device_type or t.is_meta:
            return
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # e.g. sparse tensors
            return
        if st in self._storages:
            return
        nbytes = st.nbytes()
        self._storages[st] = nbytes
        self._refs.append(weakref.ref(st, lambda ref, n=nbytes: self._free(n, ref)))
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def track(self, tensors: Iterable[Any]) -> None:
        """Count tensors that already exist (e.g. parameters, their ``.grad``, optimizer state)."""
        for t in tensors:
            tree_map_only(torch.Tensor, self._add, t)

    def reset_peak(self) -> None:
        """Start a new peak from the memory alive now."""
        self.peak_bytes = self.live_bytes
        self._refs = [r for r in self._refs if r() is not None]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._add, out)
        return out


def training_state_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list:
    """Parameters, buffers, gradients and optimizer state of a training run (for :meth:`track`)."""
    out: list = list(model.parameters()) + list(model.buffers())
    out += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        out += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return out
