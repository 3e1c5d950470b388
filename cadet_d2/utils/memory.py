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


# Ops whose cost is arithmetic, not memory: their outputs' shapes, strides and dtypes come from
# their meta kernels, so skipping the arithmetic leaves every storage size unchanged.
HEAVY_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::convolution",
             "aten::convolution_backward", "aten::_scaled_dot_product_flash_attention_for_cpu",
             "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "torchvision::roi_align",
             "torchvision::_roi_align_backward")


class SkipArithmetic(TorchDispatchMode):
    """Run :data:`HEAVY_OPS` (matrix products, convolutions, attention, RoIAlign) without their
    arithmetic: the output is allocated with the shape, strides and dtype the op's meta kernel
    gives and filled with a repeated pattern of standard-normal values; every other op runs for real.

    Entered inside a :class:`TensorMemoryTracker` (tracker first), the tracker counts exactly the
    storages a real step would hold, but a step costs memory-bound time only (no GEMM FLOPs, no
    bf16 fallback kernels). Values are meaningless, so data-dependent steps (proposals after NMS,
    sampled RoIs) may keep other counts than a real step would: compare with a real count first
    (``tests/test_planner.py`` does, on a tiny model). ``skipped`` counts the skipped calls.
    Create it before the tracker starts (its fill patterns, 4 MiB per dtype, are made then) and
    enter it as often as needed.
    """

    PATTERN = 2**20  # elements of the random pattern that fills the outputs

    def __init__(self, ops: Iterable[str] = HEAVY_OPS, seed: int = 0, device: str = "cpu"):
        super().__init__()
        self.ops = frozenset(ops)
        self.skipped = 0
        self.generator = torch.Generator().manual_seed(seed)
        self._patterns: dict = {}
        # made now, so that a tracker entered later does not count them
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            self._pattern(dtype, torch.device(device))

    def _pattern(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, device.type, device.index)
        if key not in self._patterns:
            self._patterns[key] = torch.randn(self.PATTERN, generator=self.generator).to(device=device, dtype=dtype)
        return self._patterns[key]

    def _real_like(self, meta: torch.Tensor, device: torch.device) -> torch.Tensor:
        out = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device=device)
        if out.is_floating_point() and out.numel():
            # the whole storage, filled with a repeated random pattern (a copy: much cheaper than normal_)
            # (never a view of the pattern: a tracker would count the pattern's storage as new)
            flat = out.as_strided((out.untyped_storage().nbytes() // out.element_size(),), (1,), 0)
            n, size = flat.numel(), self.PATTERN
            if n < size:
                flat.normal_(generator=self.generator)
            else:
                pattern = self._pattern(out.dtype, device)
                for i in [*range(0, n - size + 1, size), n - size]:  # the last chunk overlaps
                    flat[i:i + size].copy_(pattern)
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name not in self.ops:
            return func(*args, **kwargs)
        devices = [t.device for t in _tensors((args, kwargs)) if t.device.type != "meta"]
        if not devices:
            return func(*args, **kwargs)

        def to_meta(t: torch.Tensor) -> torch.Tensor:
            return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")

        meta_out = func(*tree_map_only(torch.Tensor, to_meta, args), **tree_map_only(torch.Tensor, to_meta, kwargs))
        self.skipped += 1
        return tree_map_only(torch.Tensor, lambda m: self._real_like(m, devices[0]), meta_out)


def _tensors(tree) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    return [x for x in tree_leaves(tree) if isinstance(x, torch.Tensor)]
