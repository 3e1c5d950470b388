"""Two CSSA variants that change only the channel switching (:meth:`CSSAFusion.switch`); the
spatial attention and the fused output are CSSA's (``cssa.py``).

``cssa_learnable``: the threshold is a parameter of each stage, tau = sigmoid(theta), theta
initialised at logit(``CADET.FUSION.CSSA.THRESHOLD``). The forward pass is CSSA's hard switch
at the current tau; the backward pass is a straight-through estimator with a sigmoid surrogate
of temperature T (``CADET.FUSION.CSSA.TEMPERATURE``)::

    m = 1[w < tau] + s - s.detach(),   s = sigmoid((tau - w) / T)     (B, C, 1, 1), m in {0, 1}
    R_s = m_R * X + (1 - m_R) * R,     X_s = m_X * R + (1 - m_X) * X

so theta and the ECA convs get the gradient of the soft mask s. The learned tau is logged per
stage as ``fusion/stage{s}/threshold`` (training) and read with :attr:`learned_threshold`.
Weight decay applies to theta like to any weight (it pulls tau towards 0.5); its learning rate
is ``SOLVER.BASE_LR x CADET.FUSION.CSSA.THRESHOLD_LR_MULT`` (the trainer gives parameters named
``threshold_logit`` their own group).

``cssa_soft``: no threshold; each channel of each stream takes the other stream's channel in
proportion to how weak its own ECA weight is and how strong the other's is::

    g_R = (1 - w_R) * w_X,   g_X = (1 - w_X) * w_R                     (B, C, 1, 1) in (0, 1)
    R_s = (1 - g_R) * R + g_R * X,   X_s = (1 - g_X) * X + g_X * R

(the hard limit w in {0, 1} switches a channel when its own weight is 0 and the other's is 1).
``THRESHOLD`` and ``RESCALE`` are not used. The mean gates are logged and kept as CSSA's switch
rates (``switch_rgb_from_aux`` = mean g_R, ``switch_aux_from_rgb`` = mean g_X).

Both follow CSSA's ``ECA`` (off: w = sigmoid(GAP(x))) and ``SPATIAL`` (off: mean of R_s, X_s)
options. Both change the switch, so ``SWITCH`` is not theirs: built directly they always switch,
and ``validate_cadet_config`` refuses ``SWITCH False`` with a variant in use (that ablation is
``cssa``'s).
"""
from __future__ import annotations

import math

import torch
from detectron2.config import configurable
from torch import nn

from .base import log_scalar, register_fusion
from .cssa import CSSAFusion, expected_params as cssa_params

THRESHOLD_PARAM = "threshold_logit"  # the parameter name the trainer's optimizer groups look for


@register_fusion("cssa_learnable")
class LearnableThresholdCSSA(CSSAFusion):
    """CSSA with a learned threshold per stage. forward(rgb, aux) as CSSA's."""

    switch_can_be_off = False

    @configurable
    def __init__(self, *, temperature: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"cssa_learnable: TEMPERATURE must be > 0, got {temperature}")
        self.temperature = temperature
        tau = min(max(self.threshold, 1e-3), 1 - 1e-3)
        self.threshold_logit = nn.Parameter(torch.tensor(math.log(tau / (1 - tau))))  # THRESHOLD_PARAM

    @classmethod
    def from_config(cls, cfg, channels: int, stage: int) -> dict:
        return {**super().from_config(cfg, channels, stage), "temperature": cfg.CADET.FUSION.CSSA.TEMPERATURE}

    @property
    def learned_threshold(self) -> float:
        """The current tau = sigmoid(theta)."""
        return float(torch.sigmoid(self.threshold_logit.detach()))

    def _mask(self, w: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, 1, 1) weights -> straight-through mask (hard values, soft gradient), hard mask."""
        hard = (w < tau).to(w.dtype)
        soft = torch.sigmoid((tau - w) / self.temperature)
        return hard + soft - soft.detach(), hard

    def switch(self, rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tau = torch.sigmoid(self.threshold_logit)
        w_rgb, _ = self.channel_weights(rgb, "rgb")
        w_aux, _ = self.channel_weights(aux, "aux")
        m_rgb, hard_rgb = self._mask(w_rgb, tau)
        m_aux, hard_aux = self._mask(w_aux, tau)
        keep_rgb = rgb * w_rgb if self.rescale else rgb
        keep_aux = aux * w_aux if self.rescale else aux
        rgb_s = m_rgb * aux + (1 - m_rgb) * keep_rgb
        aux_s = m_aux * rgb + (1 - m_aux) * keep_aux
        self.record_switch(hard_rgb.mean(), hard_aux.mean())
        log_scalar(f"fusion/stage{self.stage}/threshold", tau)
        return rgb_s, aux_s


@register_fusion("cssa_soft")
class SoftGateCSSA(CSSAFusion):
    """CSSA with a soft per-channel gate from both modalities' ECA weights (no threshold)."""

    switch_can_be_off = False

    def switch(self, rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_rgb, _ = self.channel_weights(rgb, "rgb")
        w_aux, _ = self.channel_weights(aux, "aux")
        g_rgb = (1 - w_rgb) * w_aux
        g_aux = (1 - w_aux) * w_rgb
        self.record_switch(g_rgb.mean(), g_aux.mean())
        return rgb + g_rgb * (aux - rgb), aux + g_aux * (rgb - aux)


def expected_params(channels: int, name: str = "cssa_learnable", eca: bool = True, spatial: bool = True) -> int:
    """Closed-form parameter count: CSSA's (switching on), plus one threshold for ``cssa_learnable``."""
    return cssa_params(channels, eca=eca, spatial=spatial) + (1 if name == "cssa_learnable" else 0)
