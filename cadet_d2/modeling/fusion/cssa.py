"""CSSA (Cao et al., CVPR 2023 workshops): channel switching and spatial attention, ``cssa``.

For R, X (B, C, H, W) and threshold tau::

    w_R = sigmoid(conv1d_k(GAP(R)))       (B, C) ECA weights, 1-D conv across channels, no bias,
    w_X = sigmoid(conv1d_k(GAP(X)))       k = |(log2 C + 1) / 2| rounded down, then up to odd
    R_s = where(w_R < tau, X, R)          per channel: R's weak channels are taken from X
    X_s = where(w_X < tau, R, X)
    S = [mean_c([R_s, X_s]), max_c([R_s, X_s])]        (B, 2, H, W)
    a = sigmoid(conv7x7(S))                              (B, 1, H, W), 2 -> 1, padding 3, bias
    fused = a * R_s + (1 - a) * X_s

``rescale=True`` also multiplies the kept channels by their ECA weight (plain ECA).

Component ablation (``CADET.FUSION.CSSA.ECA`` / ``SWITCH`` / ``SPATIAL``, all True = CSSA):

* ``eca=False``: the channel weights come from a fixed rule, ECA without its 1-D conv:
  ``w = sigmoid(GAP(x))`` (no parameters); switching (and ``rescale``) use these weights as
  above, so a channel is switched when its mean is below logit(tau) (0 at tau = 0.5).
* ``switch=False``: ``R_s = R``, ``X_s = X`` (with ``rescale``: ``R_s = w_R * R``,
  ``X_s = w_X * X``, plain ECA). Without ``rescale`` the weights are not used and no ECA conv is
  built; no switch rates are logged.
* ``spatial=False``: ``fused = (R_s + X_s) / 2``; no 7x7 conv is built, ``last_attention`` stays None.

Gradient of the ECA convs: the hard ``where`` carries none, so every selected channel (kept or
switched) is multiplied by a straight-through factor ``st = exp(log w - (log w).detach())`` of
its own modality's weight: exactly 1 in the forward pass (so outputs equal the formulas above),
with the gradient of ``w / w.detach()``, i.e. ECA is trained as if it rescaled the channel it
selects. Where ``rescale=True`` the kept channels use w itself instead.

Logged per stage (training, via ``log_scalar``): the fraction of channels switched R<-X
(``fusion/stage{s}/switch_rgb_from_aux``) and X<-R (``.../switch_aux_from_rgb``); not when
compiled (``CADET.BACKBONE.COMPILE``). The last
attention map ``a`` is kept, detached, in ``self.last_attention`` (B, 1, H, W), and the last
switch rates in ``self.last_switch_rates`` (rgb_from_aux, aux_from_rgb), 0-dim tensors.

Variants (``cssa_variants.py``) replace only :meth:`CSSAFusion.switch`: ``cssa_learnable``
(threshold learned per stage) and ``cssa_soft`` (a soft gate instead of switching).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from .base import register_fusion, FusionOutput, log_scalar


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA kernel size: int(|(log2 C + b) / gamma|), made odd by adding 1 if even."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


class ECA(nn.Module):
    """(B, C, H, W) -> channel weights (B, C, 1, 1) in (0, 1), and their log."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.conv(x.mean(dim=(2, 3))[:, None, :])[:, 0, :, None, None]
        return torch.sigmoid(z), F.logsigmoid(z)


@register_fusion("cssa")
class CSSAFusion(nn.Module):
    """CSSA. forward(rgb, aux): (B, C, H, W) each -> FusionOutput(fused, rgb, aux), streams unchanged."""

    switch_can_be_off = True  # False in the variants: their switch is the point, SWITCH is not theirs

    @classmethod
    def check_config(cls, cfg, name: str) -> None:
        """``CSSA.SWITCH False`` (the no-switching ablation) only for a module whose switch can be off."""
        if not cfg.CADET.FUSION.CSSA.SWITCH and not cls.switch_can_be_off:
            raise ValueError(f"CADET.FUSION.CSSA.SWITCH False does not apply to {name} (it replaces the switch); "
                             "use cssa with SWITCH False for the no-switching ablation")

    @configurable
    def __init__(self, *, channels: int, stage: int, threshold: float = 0.5,
                 rescale: bool = False, eca: bool = True, switch: bool = True,
                 spatial: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.stage = stage
        self.threshold = threshold
        self.rescale = rescale
        self.use_eca, self.use_spatial = eca, spatial
        self.use_switch = switch or not self.switch_can_be_off
        if eca and (self.use_switch or rescale):  # otherwise the weights are unused: no parameters
            self.eca_rgb = ECA(channels)
            self.eca_aux = ECA(channels)
        else:
            self.eca_rgb = self.eca_aux = None
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=True) if spatial else None
        self.last_attention: Optional[torch.Tensor] = None
        self.last_switch_rates: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @classmethod
    def from_config(cls, cfg, channels: int, stage: int) -> dict:
        opt = cfg.CADET.FUSION.CSSA
        return {"channels": channels, "stage": stage, "threshold": opt.THRESHOLD,
                "rescale": opt.RESCALE, "eca": opt.ECA, "switch": opt.SWITCH, "spatial": opt.SPATIAL}

    def channel_weights(self, x: torch.Tensor, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> weights w and log w (B, C, 1, 1): ECA of stream ``which`` ("rgb" or
        "aux"), or the fixed rule sigmoid(GAP(x)) when ECA is off."""
        if not self.use_eca:
            z = x.mean(dim=(2, 3), keepdim=True)
            return torch.sigmoid(z), F.logsigmoid(z)
        return (self.eca_rgb if which == "rgb" else self.eca_aux)(x)

    def _select(self, own: torch.Tensor, other: torch.Tensor, w: torch.Tensor,
                logw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        switch = w < self.threshold  # (B, C, 1, 1)
        st = torch.exp(logw - logw.detach())  # == 1, gradient of w / w.detach()
        kept = own * (w if self.rescale else st)
        return torch.where(switch, other * st, kept), switch

    def switch(self, rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel switching: (B, C, H, W) x 2 -> the switched maps R_s, X_s (B, C, H, W) each."""
        if not self.use_switch:
            if not self.rescale:
                return rgb, aux
            return rgb * self.channel_weights(rgb, "rgb")[0], aux * self.channel_weights(aux, "aux")[0]
        w_rgb, logw_rgb = self.channel_weights(rgb, "rgb")
        w_aux, logw_aux = self.channel_weights(aux, "aux")
        rgb_s, sw_rgb = self._select(rgb, aux, w_rgb, logw_rgb)
        aux_s, sw_aux = self._select(aux, rgb, w_aux, logw_aux)
        self.record_switch(sw_rgb.float().mean(), sw_aux.float().mean())
        return rgb_s, aux_s

    def record_switch(self, rgb_from_aux: torch.Tensor, aux_from_rgb: torch.Tensor) -> None:
        """Keep and log the fraction of channels switched R<-X and X<-R (scalars)."""
        self.last_switch_rates = (rgb_from_aux.detach(), aux_from_rgb.detach())  # no GPU sync
        log_scalar(f"fusion/stage{self.stage}/switch_rgb_from_aux", rgb_from_aux)
        log_scalar(f"fusion/stage{self.stage}/switch_aux_from_rgb", aux_from_rgb)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> FusionOutput:
        rgb_s, aux_s = self.switch(rgb, aux)
        if self.spatial is None:
            return FusionOutput((rgb_s + aux_s) / 2, rgb, aux)
        both = torch.cat([rgb_s, aux_s], dim=1)
        s = torch.cat([both.mean(dim=1, keepdim=True), both.amax(dim=1, keepdim=True)], dim=1)
        a = torch.sigmoid(self.spatial(s))  # (B, 1, H, W)
        self.last_attention = a.detach()
        return FusionOutput(a * rgb_s + (1 - a) * aux_s, rgb, aux)


def expected_params(channels: int, eca: bool = True, switch: bool = True, spatial: bool = True,
                    rescale: bool = False) -> int:
    """Closed-form parameter count of ``cssa``: two ECA kernels (when ECA is on and its weights
    are used: switching or rescaling) + a 7x7 conv (2 -> 1) with bias (when spatial is on)."""
    t = math.floor((math.log2(channels) + 1) / 2)
    k = t + 1 - t % 2  # odd: t if odd else t + 1
    return (2 * k if eca and (switch or rescale) else 0) + (2 * 7 * 7 + 1 if spatial else 0)
