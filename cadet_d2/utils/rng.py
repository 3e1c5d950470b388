"""The process's global RNG states (torch CPU and current CUDA device, numpy, python ``random``):
capture, restore, run a block without changing them, or run a block under a fixed seed.

The one place that saves and restores global RNG state: checkpoints (``engine/checkpoint.py``)
store :func:`capture_rng_state`'s dict, the training stream (``data/stream.py``) seeds each
sample with :func:`seeded_rngs`. The captured dict holds only tensors and plain numbers, so a
checkpoint holding it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def capture_rng_state(cuda: bool = True) -> dict:
    """This process's global RNG states; with ``cuda`` also the current CUDA device's generator
    (when CUDA is initialised)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@contextlib.contextmanager
def preserved_rng_state(cuda: bool = True) -> Iterator[None]:
    """Run a block (e.g. an evaluation) without changing any global RNG state."""
    state = capture_rng_state(cuda)
    try:
        yield
    finally:
        restore_rng_state(state)


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed python ``random``, numpy's global RNG and torch's CPU generator; restore them after
    (CUDA generators stay untouched: this runs in data-loader workers)."""
    with preserved_rng_state(cuda=False):
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        yield
