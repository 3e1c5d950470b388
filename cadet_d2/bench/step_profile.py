"""Every op of one training step, forward and backward, as a text report (``--step-profile``).

``whole_step_profile(step, model, device)`` runs ``step()`` once under torch.profiler with the
op input shapes recorded and, for the forward pass, a profiler range per model part (each
stream of the backbone, each fusion module, the FPN, the RPN, the RoI heads: the children of
``model``, ``model.backbone`` and ``model.backbone.bottom_up``, named ``fwd:<module path>``).
A MiT stream, run stage by stage, is timed as the sum of its patch embeddings, blocks and norms.
The report has three tables:

* the forward time of each model part (inclusive CPU time of its ranges; parts nest);
* every op of the step by self CPU time (forward, backward and the optimizer together: the
  backward of an op is its own op, e.g. ``aten::convolution_backward``);
* every (op, input shapes) pair by self CPU time, which tells the layers apart
  (e.g. the FPN's 3x3 convs from the Mix-FFN depth-wise ones).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..utils.timing import profiled

PART_PREFIX = "fwd:"


def _called_modules(module: nn.Module) -> list[nn.Module]:
    """The modules whose forward runs when ``module`` does its work: a MiT stream is run stage
    by stage (``forward_stage``), not by its own forward, so its patch embeddings, blocks and
    norms stand for it."""
    if not hasattr(module, "forward_stage"):
        return [module]
    mods = [module.patch_embed]
    for stage in module.stages:
        mods += [m for m in (stage.downsample, *stage.blocks, stage.norm) if m is not None]
    return mods


def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The parts timed in the forward: children of the model, of its backbone and of the
    backbone's bottom-up network, by module path, each with the modules that run it."""
    parts = {}
    for prefix in ("", "backbone", "backbone.bottom_up"):
        try:
            parent = model.get_submodule(prefix) if prefix else model
        except AttributeError:
            continue
        for name, child in parent.named_children():
            parts[f"{prefix}.{name}" if prefix else name] = _called_modules(child)
            if isinstance(child, nn.ModuleList):
                for i, sub in enumerate(child):
                    parts[f"{prefix}.{name}.{i}" if prefix else f"{name}.{i}"] = _called_modules(sub)
    return parts


class _PartRanges:
    """Forward hooks that open a profiler range before each part's forward and close it after."""

    def __init__(self, parts: dict[str, list[nn.Module]]):
        self.parts, self.handles, self.open = parts, [], {}

    def __enter__(self):
        for name, modules in self.parts.items():
            for module in modules:
                self.handles.append(module.register_forward_pre_hook(self._pre(name)))
                self.handles.append(module.register_forward_hook(self._post(name)))
        return self

    def _pre(self, name: str):
        def hook(module, args):
            rf = torch.autograd.profiler.record_function(PART_PREFIX + name)
            rf.__enter__()
            self.open.setdefault(name, []).append(rf)
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            self.open[name].pop().__exit__(None, None, None)
        return hook

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def whole_step_profile(step: Callable[[], None], model: nn.Module, device: torch.device,
                       title: str = "") -> str:
    """Run ``step()`` once under the profiler; the report (markdown tables, see the module doc)."""
    unwrapped = getattr(model, "module", model)
    with _PartRanges(model_parts(unwrapped)):
        prof = profiled(step, device, record_shapes=True)
    by_op = prof.key_averages()
    ops = sorted((e for e in by_op if not e.key.startswith(PART_PREFIX)), key=lambda e: e.self_cpu_time_total,
                 reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    parts = sorted((e for e in by_op if e.key.startswith(PART_PREFIX)), key=lambda e: e.key)
    lines = [f"# Whole-step profile{': ' + title if title else ''}", "",
             f"Self CPU time of all ops: {total / 1e3:.1f} ms (forward + backward + optimizer).", "",
             "## Forward time per model part (inclusive; parts nest)", "",
             "| part | forward ms | % of all ops | calls |", "|---|---:|---:|---:|"]
    lines += [f"| {e.key[len(PART_PREFIX):]} | {e.cpu_time_total / 1e3:.1f} | {100 * e.cpu_time_total / total:.1f} | "
              f"{e.count} |" for e in parts]
    lines += ["", "## Every op by self CPU time", "", "| op | self ms | % | calls |", "|---|---:|---:|---:|"]
    lines += [f"| {e.key} | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / total:.1f} | "
              f"{e.count} |" for e in ops]
    shaped = sorted((e for e in prof.key_averages(group_by_input_shape=True) if not e.key.startswith(PART_PREFIX)),
                    key=lambda e: e.self_cpu_time_total, reverse=True)
    lines += ["", "## Every op and input shapes by self CPU time", "", "| op | input shapes | self ms | % | calls |",
              "|---|---|---:|---:|---:|"]
    lines += [f"| {e.key} | {_shapes(e.input_shapes)} | {e.self_cpu_time_total / 1e3:.2f} | "
              f"{100 * e.self_cpu_time_total / total:.2f} | {e.count} |" for e in shaped if e.self_cpu_time_total > 0]
    return "\n".join(lines) + "\n"


def _shapes(shapes) -> str:
    return " ".join("x".join(map(str, s)) for s in (shapes or []) if s) or "-"
