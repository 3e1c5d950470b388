"""Fusion registry, the interface every fusion module follows, and its builder.

Interface
---------
A fusion module is an ``nn.Module`` built as ``Module(cfg, channels=C, stage=s)`` (the
``@configurable`` pattern of Detectron2: ``from_config(cls, cfg, channels, stage)`` turns the
config into keyword arguments). ``stage`` is 1-4.

``forward(rgb, aux)`` takes the two streams' maps of one stage, each (B, C, H, W), and returns a
:class:`FusionOutput`:

* ``fused`` (B, C, H, W): the map given to the FPN at this stage;
* ``rgb``, ``aux`` (B, C, H, W): the maps that continue in the two MiT streams. A module that
  rectifies the streams (CMX's FRM, ``feedback=True``) returns the rectified maps here; every
  other module returns its inputs unchanged, so the streams stay independent.

Optional: a classmethod ``check_config(cfg, name)`` raises ``ValueError`` for settings of its
keys the module cannot honour; :func:`check_fusion_config` calls it for each module a config
builds, when the config is loaded (``cadet_d2.engine.setup.load_config``).

Optional: ``start_as_rgb()`` sets the module's weights so that ``fused`` equals the RGB map (used
when a dual model starts from an RGB detector, ``CADET.INIT.RGB_DETECTOR``); ``concat`` has it.

A module may instead return one tensor: the fused map, with both streams unchanged. Any other
return value stops the forward, naming the module and what it returned (:func:`fusion_output`).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import NamedTuple, Sequence

import torch
from detectron2.utils.events import get_event_storage
from detectron2.utils.registry import Registry


class NamedRegistry(Registry):
    """fvcore's Registry plus registration under a name of one's choosing (``register()``
    takes the class name)."""

    def register_as(self, name: str):
        """Class decorator: register the class under ``name``."""
        def deco(obj):
            own = obj.__name__
            obj.__name__ = name  # Registry.register(obj) keys obj by its __name__, checking duplicates
            try:
                self.register(obj)
            finally:
                obj.__name__ = own
            return obj
        return deco


FUSION_REGISTRY = NamedRegistry("FUSION")
FUSION_REGISTRY.__doc__ = """
Registry of fusion modules: ``Module(cfg, channels=C, stage=s)``, ``forward(rgb, aux) ->
FusionOutput``. Register your own with ``@FUSION_REGISTRY.register()`` and name it in
``CADET.FUSION.NAME`` (plus ``CADET.FUSION.IMPORTS`` for the file that defines it).
"""


def register_fusion(name: str):
    """Class decorator: register a fusion module under ``name`` (the name used in YAML).

    ``@FUSION_REGISTRY.register()`` works too and registers under the class name.
    """
    return FUSION_REGISTRY.register_as(name)


class FusionOutput(NamedTuple):
    fused: torch.Tensor  # (B, C, H, W) map for the FPN
    rgb: torch.Tensor  # (B, C, H, W) map that continues in the RGB stream
    aux: torch.Tensor  # (B, C, H, W) map that continues in the auxiliary stream


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) if isinstance(v, torch.Tensor) else type(v).__name__ for v in value)
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"


def fusion_output(module: torch.nn.Module, out, rgb: torch.Tensor, aux: torch.Tensor) -> FusionOutput:
    """The :class:`FusionOutput` of ``module(rgb, aux)``'s return value ``out``: itself, or, for one
    tensor, ``FusionOutput(out, rgb, aux)``. Anything else, or a fused map whose shape is not the
    streams' (B, C, H, W), raises TypeError naming the module and what it returned."""
    name = type(module).__name__
    if isinstance(out, torch.Tensor):
        out = FusionOutput(out, rgb, aux)
    elif not (isinstance(out, FusionOutput) and all(isinstance(t, torch.Tensor) for t in out)):
        raise TypeError(f"fusion module {name} returned {_describe(out)}; a fusion forward(rgb, aux) returns "
                        "FusionOutput(fused, rgb, aux) or one tensor (the fused map, streams unchanged)")
    if out.fused.shape != rgb.shape:
        raise TypeError(f"fusion module {name} returned a fused map of shape {tuple(out.fused.shape)}; it must "
                        f"have the streams' shape {tuple(rgb.shape)} (B, C, H, W)")
    return out


def import_fusion_modules(imports: Sequence[str]) -> None:
    """Import user modules (dotted names or ``.py`` paths) so their registrations run."""
    for item in imports:
        if item.endswith(".py") or os.sep in item:
            path = os.path.abspath(item)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"CADET.FUSION.IMPORTS: no such file: {item}")
            name = "cadet_user_" + os.path.splitext(os.path.basename(path))[0]
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(item)


def registered_fusions() -> list[str]:
    """Names of every registered fusion module, sorted."""
    return sorted(name for name, _ in FUSION_REGISTRY)


def check_fusion_name(name: str) -> None:
    """KeyError naming the registered modules unless ``name`` is one of them."""
    if name not in FUSION_REGISTRY:
        raise KeyError(
            f"Unknown fusion module {name!r}. Registered: {', '.join(registered_fusions())}. "
            "A module of your own needs @FUSION_REGISTRY.register() and its file or module in "
            "CADET.FUSION.IMPORTS."
        )


def fusion_names(cfg) -> list[str]:
    """Fusion module name of each stage 1-4: FUSION.NAME at FUSION.STAGES, FUSION.DEFAULT elsewhere."""
    f = cfg.CADET.FUSION
    return [f.NAME if s in f.STAGES else f.DEFAULT for s in (1, 2, 3, 4)]


def built_fusions(cfg) -> list[str]:
    """The module built at each stage 1-4: :func:`fusion_names` with ``hybrid`` replaced by its
    ``HYBRID.EARLY`` (at ``HYBRID.EARLY_STAGES``) or ``HYBRID.LATE``."""
    h = cfg.CADET.FUSION.HYBRID
    return [(h.EARLY if s in h.EARLY_STAGES else h.LATE) if n == "hybrid" else n
            for s, n in zip((1, 2, 3, 4), fusion_names(cfg))]


def check_fusion_config(cfg) -> None:
    """When a config is loaded, before any model is built: import ``CADET.FUSION.IMPORTS``,
    check that ``NAME``, ``DEFAULT`` and, when a stage uses ``hybrid``, ``HYBRID.EARLY``/``LATE``
    are registered fusion modules, and run each built module's ``check_config``."""
    f = cfg.CADET.FUSION
    import_fusion_modules(f.IMPORTS)
    names = [f.NAME, f.DEFAULT]
    names += [f.HYBRID.EARLY, f.HYBRID.LATE] if "hybrid" in names else []
    for name in names:
        check_fusion_name(name)
    for name in dict.fromkeys(built_fusions(cfg)):
        check = getattr(FUSION_REGISTRY.get(name), "check_config", None)
        if check is not None:
            check(cfg, name)


def build_fusion(cfg, name: str, channels: int, stage: int) -> torch.nn.Module:
    """Build the fusion module ``name`` for a stage with ``channels`` channels (stage 1-4)."""
    import_fusion_modules(cfg.CADET.FUSION.IMPORTS)
    check_fusion_name(name)
    return FUSION_REGISTRY.get(name)(cfg, channels=channels, stage=stage)


def log_scalar(name: str, value: torch.Tensor, period: int = 20) -> None:
    """Put ``value`` into Detectron2's EventStorage every ``period`` iterations (training only).

    Outside a training loop (no EventStorage) this does nothing, nor inside a region that
    torch.compile traces (``CADET.BACKBONE.COMPILE``): reading the storage's iteration there would
    make it a guard or a dynamic size of the graph, and ``float()`` would break the graph.
    """
    if torch.compiler.is_compiling():
        return
    try:
        storage = get_event_storage()
    except AssertionError:
        return
    if storage.iter % period == 0:
        storage.put_scalar(name, float(value.detach()), smoothing_hint=False)
