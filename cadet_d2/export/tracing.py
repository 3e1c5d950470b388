"""Tracing helpers shared by the ONNX and TorchScript exports: example input, warning summary."""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator

import torch


def example_image(channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A uniform random (1, C, H, W) float32 image in [0, 255]: the tracing example.

    The traced graph does not depend on the values (only on the one Python path Detectron2 takes
    for finite boxes), so any image of the export size will do.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, height, width, generator=g) * 255


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Record the warnings raised inside, as unique "Category (file:line): message" lines.

    Tracing Detectron2 raises ~20 expected TracerWarnings (Python bools, ``len`` of tensors,
    asserts: each freezes one branch, see docs/export.md) and, for ONNX, the legacy exporter's
    DeprecationWarning; they are summarised instead of flooding the console.
    """
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    seen = set()
    for w in caught:
        where = w.filename.split("site-packages" + os.sep)[-1]
        line = f"{w.category.__name__} ({where}:{w.lineno}): {str(w.message).splitlines()[0][:120]}"
        if line not in seen:
            seen.add(line)
            found.append(line)
