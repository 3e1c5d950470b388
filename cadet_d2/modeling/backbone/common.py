"""Pieces shared by the single- and dual-stream backbones."""
from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

from .mit import MiT

OUT_NAMES = ("res2", "res3", "res4", "res5")  # stages 1-4, strides 4, 8, 16, 32


def build_stream(cfg, in_chans: int) -> MiT:
    """One MiT stream of ``CADET.BACKBONE.SIZE`` for ``in_chans`` input channels.

    Loads ``CADET.BACKBONE.PRETRAINED`` when set (first patch embedding adapted to
    ``in_chans``), turns on activation checkpointing for ``CHECKPOINT_STAGES`` and sets the
    stage outputs' memory order (``CHANNELS_LAST``) and the attention kernel (:func:`attention_kind`).
    """
    b = cfg.CADET.BACKBONE
    stream = MiT(b.SIZE, in_chans, drop_path_rate=b.DROP_PATH_RATE)
    if b.PRETRAINED:
        from .pretrained import load_pretrained_mit

        load_pretrained_mit(stream, b.PRETRAINED)
    stream.set_grad_checkpointing(list(b.CHECKPOINT_STAGES))
    stream.set_channels_last(b.CHANNELS_LAST)
    stream.set_attention(attention_kind(cfg))
    return stream


def attention_kind(cfg, device: str | None = None) -> str:
    """``CADET.BACKBONE.ATTENTION`` on ``device`` (default ``MODEL.DEVICE``): ``"auto"`` is
    ``"math"`` on CPU, where it is the faster kernel (docs/benchmarks.md), and ``"fused"``
    elsewhere (flash attention's memory saving on GPUs)."""
    kind = cfg.CADET.BACKBONE.ATTENTION
    if kind == "auto":
        return "math" if str(device or cfg.MODEL.DEVICE).startswith("cpu") else "fused"
    return kind


def check_out_features(out_features) -> list[str]:
    bad = [f for f in out_features if f not in OUT_NAMES]
    if bad or not out_features:
        raise ValueError(f"CADET.BACKBONE.OUT_FEATURES {list(out_features)}: choose from {list(OUT_NAMES)}")
    return list(out_features)


class MiTBackbone(Backbone):
    """Shared outputs of the MiT backbones: ``res2..res5`` with MiT's channels and strides
    (``out_features``, ``out_channels``, ``out_strides``; Detectron2 reads them through
    :meth:`output_shape`)."""

    def _set_outputs(self, stream: MiT, out_features) -> None:
        self.out_features = check_out_features(out_features)
        self.out_channels = dict(zip(OUT_NAMES, stream.embed_dims))
        self.out_strides = {n: f["reduction"] for n, f in zip(OUT_NAMES, stream.feature_info)}

    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self.out_channels[n], stride=self.out_strides[n]) for n in self.out_features
        }


def maybe_compile(cfg, module: nn.Module) -> nn.Module:
    """``module.compile()`` (torch.compile in place: same state-dict keys) when
    ``CADET.BACKBONE.COMPILE``; shapes vary with the input size, so torch may recompile a few
    times (automatic dynamic shapes) before it settles."""
    if cfg.CADET.BACKBONE.COMPILE:
        module.compile()
    return module


def wrap_fpn(cfg, bottom_up: nn.Module) -> FPN:
    """Detectron2's FPN (with a max-pool P6) on top of a MiT backbone, from ``MODEL.FPN``
    (the MiT backbone compiled first when ``CADET.BACKBONE.COMPILE``)."""
    maybe_compile(cfg, bottom_up)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
