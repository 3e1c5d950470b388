"""Loading ImageNet MiT weights from a local file into a :class:`MiT` with any number of inputs.

Nothing is ever downloaded and no pickled Python object is ever executed: ``.pth``/``.bin``
files are read with ``torch.load(..., weights_only=True)`` (:mod:`cadet_d2.utils.safe_load`),
``.safetensors`` files with the ``safetensors`` package.

Accepted key layouts (detected from the keys; ``module.`` prefixes are dropped)::

    SegFormer release (mit_bX.pth)        timm layout used by MiT
    patch_embed1.{proj,norm}.*            patch_embed.{proj,norm}.*
    patch_embed{i}.{proj,norm}.*  (i>1)   stages.{i-1}.downsample.{proj,norm}.*
    block{i}.{j}.<rest>                   stages.{i-1}.blocks.{j}.<rest>   (mlp.dwconv.dwconv -> mlp.dwconv)
    norm{i}.*                             stages.{i-1}.norm.*

    Hugging Face SegformerModel           (stage index i is 0-based here)
    encoder.patch_embeddings.{i}.proj     patch_embed.proj (i=0) / stages.{i}.downsample.proj
    encoder.patch_embeddings.{i}.layer_norm  ... .norm
    encoder.block.{i}.{j}.layer_norm_1    stages.{i}.blocks.{j}.norm1
    ... .attention.self.query             ... .attn.q
    ... .attention.self.key / .value      ... .attn.kv  = cat([key, value], dim 0)
    ... .attention.self.sr                ... .attn.sr
    ... .attention.self.layer_norm        ... .attn.norm
    ... .attention.output.dense           ... .attn.proj
    ... .layer_norm_2                     ... .norm2
    ... .mlp.dense1 / .mlp.dense2         ... .mlp.fc1 / .mlp.fc2
    ... .mlp.dwconv.dwconv                ... .mlp.dwconv
    encoder.layer_norm.{i}                stages.{i}.norm

SegFormer files may be a plain state dict or wrapped in ``{"state_dict": ...}`` /
``{"model": ...}`` and may carry a ``backbone.`` prefix (mmseg checkpoints); Hugging Face keys
may carry a ``segformer.`` prefix (SegformerForImageClassification / ForSemanticSegmentation).
Keys already in MiT's own (timm) layout are taken as they are. Classification and decoder heads
(``head.*``, ``classifier.*``, ``decode_head.*``, ``auxiliary_head.*``) are ignored.

First patch embedding (weight (C_out, 3, 7, 7) in the file, (C_out, C_in, 7, 7) in the model):
C_in == 3 copies it; any other C_in gives *every* input channel the mean of the three RGB
filters, scaled by 3 / C_in, so that an input whose C_in channels all carry the same signal x
gives the same response as the RGB filters on a grey image (x, x, x) (timm's convention for
adapting input convs; C_in = 1 gets the sum of the RGB filters). The bias is copied.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Optional

import torch

from ...utils.safe_load import UnsafeCheckpointError, load_torch_weights
from .mit import MiT

logger = logging.getLogger(__name__)

FIRST_CONV = "patch_embed.proj.weight"
WRAPPER_PREFIXES = ("module.", "segformer.", "backbone.")
HEAD_PREFIXES = ("head.", "classifier.", "decode_head.", "auxiliary_head.")
WHERE_TO_GET = (
    "Nothing is downloaded: put ImageNet MiT weights on disk yourself, e.g. SegFormer's "
    "mit_bX.pth (the ImageNet-1k encoders of the SegFormer release) or a Hugging Face "
    "`nvidia/mit-bX` snapshot (pytorch_model.bin or model.safetensors), and point "
    "CADET.BACKBONE.PRETRAINED at the file (empty = random initialisation)."
)

# Hugging Face block sub-module -> timm block sub-module (key and value are handled apart).
HF_BLOCK_NAMES = {
    "layer_norm_1": "norm1",
    "attention.self.query": "attn.q",
    "attention.self.sr": "attn.sr",
    "attention.self.layer_norm": "attn.norm",
    "attention.output.dense": "attn.proj",
    "layer_norm_2": "norm2",
    "mlp.dense1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv",
    "mlp.dense2": "mlp.fc2",
}


class PretrainedWeightsError(ValueError):
    """A weights file that cannot be loaded into the MiT (unreadable, wrong format or size)."""


# ---- reading the file -------------------------------------------------------------------------

def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a local ``.pth``/``.bin``/``.safetensors`` file, unwrapped from
    ``{"state_dict": ...}`` / ``{"model": ...}``; never downloads, never unpickles objects."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MiT weights file not found: {path!r}. {WHERE_TO_GET}")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    try:
        obj = load_torch_weights(path)
    except UnsafeCheckpointError:
        raise PretrainedWeightsError(
            f"{path}: not a plain weights file (it needs arbitrary Python objects unpickled, "
            f"which cadet_d2 will not execute). Save just the state dict of tensors, "
            f"e.g. torch.save(model.state_dict(), path), or use a .safetensors file."
        ) from None
    except (RuntimeError, OSError) as e:  # CorruptCheckpointError is a RuntimeError
        raise PretrainedWeightsError(f"{path}: unreadable weights file: {e}") from None
    return _unwrap(obj, path)


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError(
            f"{path} is a .safetensors file but the `safetensors` package is not installed; "
            f"`pip install safetensors`, or use the pytorch_model.bin of the same snapshot"
        ) from None
    try:
        return dict(load_file(path, device="cpu"))
    except Exception as e:  # safetensors raises its own SafetensorError on bad headers
        raise PretrainedWeightsError(f"{path}: unreadable .safetensors file: {e}") from None


def _unwrap(obj, path: str) -> dict[str, torch.Tensor]:
    """Descend ``state_dict`` / ``model`` wrappers; keep the tensor entries."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise PretrainedWeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise PretrainedWeightsError(f"{path}: no tensors found (keys: {list(obj)[:5]})")
    return tensors


# ---- key conversion -------------------------------------------------------------------------

def _stage_module(i: int, module: str) -> str:
    """timm name of stage i's (0-based) patch embedding sub-module ``proj`` or ``norm``."""
    return f"patch_embed.{module}" if i == 0 else f"stages.{i}.downsample.{module}"


def segformer_to_timm(key: str) -> Optional[str]:
    """``patch_embed2.proj.weight`` -> ``stages.1.downsample.proj.weight`` etc.; None if not MiT."""
    m = re.fullmatch(r"patch_embed([1-4])\.(proj|norm)\.(\w+)", key)
    if m:
        return f"{_stage_module(int(m[1]) - 1, m[2])}.{m[3]}"
    m = re.fullmatch(r"block([1-4])\.(\d+)\.(.+)", key)
    if m:
        rest = m[3].replace("mlp.dwconv.dwconv.", "mlp.dwconv.")
        return f"stages.{int(m[1]) - 1}.blocks.{m[2]}.{rest}"
    m = re.fullmatch(r"norm([1-4])\.(\w+)", key)
    if m:
        return f"stages.{int(m[1]) - 1}.norm.{m[2]}"
    return None


def hf_to_timm(key: str) -> Optional[str]:
    """``encoder.block.0.1.mlp.dense1.weight`` -> ``stages.0.blocks.1.mlp.fc1.weight`` etc.

    Attention key/value map to ``...attn.kv#key`` / ``...attn.kv#value`` (joined later).
    None if the key is not part of the encoder.
    """
    m = re.fullmatch(r"encoder\.patch_embeddings\.([0-3])\.(proj|layer_norm)\.(\w+)", key)
    if m:
        return f"{_stage_module(int(m[1]), 'proj' if m[2] == 'proj' else 'norm')}.{m[3]}"
    m = re.fullmatch(r"encoder\.layer_norm\.([0-3])\.(\w+)", key)
    if m:
        return f"stages.{m[1]}.norm.{m[2]}"
    m = re.fullmatch(r"encoder\.block\.([0-3])\.(\d+)\.(.+)\.(\w+)", key)
    if not m:
        return None
    block, module, param = f"stages.{m[1]}.blocks.{m[2]}", m[3], m[4]
    if module in ("attention.self.key", "attention.self.value"):
        return f"{block}.attn.kv.{param}#{module.rsplit('.', 1)[1]}"
    return f"{block}.{HF_BLOCK_NAMES[module]}.{param}" if module in HF_BLOCK_NAMES else None


def detect_format(keys: list[str]) -> str:
    """"hf", "segformer" or "timm" from the key names; raises if none fits."""
    if any(k.startswith(("encoder.patch_embeddings.", "encoder.block.")) for k in keys):
        return "hf"
    if any(re.match(r"(patch_embed[1-4]|block[1-4])\.", k) for k in keys):
        return "segformer"
    if any(k.startswith(("patch_embed.", "stages.")) for k in keys):
        return "timm"
    raise PretrainedWeightsError(
        f"no MiT encoder weights recognised (expected SegFormer mit_bX.pth keys like "
        f"'patch_embed1.proj.weight' or Hugging Face keys like 'encoder.block.0.0.attention.self.query.weight'); "
        f"first keys in the file: {keys[:5]}"
    )


def strip_prefixes(key: str) -> str:
    """Drop leading wrapper prefixes: ``module.`` (DDP), ``segformer.`` (HF task models),
    ``backbone.`` (mmseg SegFormer checkpoints)."""
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _join_kv(mapped: dict[str, tuple[str, torch.Tensor]]) -> dict[str, tuple[str, torch.Tensor]]:
    """Replace the ``...kv.P#key`` / ``...kv.P#value`` pairs by ``...kv.P`` = cat([key, value])."""
    out = {k: v for k, v in mapped.items() if "#" not in k}
    for k in [k for k in mapped if k.endswith("#key")]:
        base = k[: -len("#key")]
        if base + "#value" in mapped:
            (src_k, key), (src_v, value) = mapped[k], mapped[base + "#value"]
            out[base] = (f"{src_k} + {src_v}", torch.cat([key, value], dim=0))
    return out


def convert_to_timm(state: dict[str, torch.Tensor]) -> tuple[dict[str, tuple[str, torch.Tensor]], list[str], list[str], str]:
    """File state dict -> ({timm key: (file key, tensor)}, unmapped file keys, ignored head keys, format)."""
    state = {strip_prefixes(k): v for k, v in state.items()}
    fmt = detect_format(list(state))
    to_timm = {"hf": hf_to_timm, "segformer": segformer_to_timm, "timm": lambda k: k}[fmt]
    mapped, unmapped, ignored = {}, [], []
    for k, v in state.items():
        new = None if k.startswith(HEAD_PREFIXES) else to_timm(k)
        if new is not None:
            mapped[new] = (k, v)
        else:
            (ignored if k.startswith(HEAD_PREFIXES) else unmapped).append(k)
    joined = _join_kv(mapped)
    # a key or value without its partner: reported as not used (attn.kv stays missing)
    unmapped += [src for k, (src, _) in mapped.items() if "#" in k and k[: k.rindex("#")] not in joined]
    return joined, unmapped, ignored, fmt


# ---- first conv and shapes ---------------------------------------------------------------------

def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(C_out, 3, k, k) RGB filters -> (C_out, in_chans, k, k): a copy for 3 channels, else every
    channel gets mean_rgb(weight) * 3 / in_chans (same response to a grey input)."""
    if in_chans == weight.shape[1]:
        return weight.clone()
    mean = weight.mean(dim=1, keepdim=True)
    return (mean * (3.0 / in_chans)).repeat(1, in_chans, 1, 1)


def _check_shape(path: str, model: MiT, timm_key: str, file_key: str, value: torch.Tensor,
                 expected: torch.Size) -> None:
    if tuple(value.shape) != tuple(expected):
        raise PretrainedWeightsError(
            f"{path}: {file_key!r} (-> {timm_key!r}) has shape {tuple(value.shape)} in the file but "
            f"{tuple(expected)} in MiT-{model.size}; is the file for another MiT size? "
            f"(CADET.BACKBONE.SIZE = {model.size!r})"
        )


def _first_conv(path: str, model: MiT, file_key: str, value: torch.Tensor,
                expected: torch.Size) -> tuple[torch.Tensor, bool]:
    """The model's first patch-embedding weight from the file's, and whether it was adapted."""
    adapt = value.ndim == 4 and value.shape[1] == 3 and expected[1] != 3
    if adapt:
        value = adapt_first_conv(value, expected[1])
    _check_shape(path, model, FIRST_CONV, file_key, value, expected)
    return value, adapt


# ---- entry point ---------------------------------------------------------------------------------

def load_pretrained_mit(model: MiT, path: str, strict: bool = True) -> dict[str, list[str]]:
    """Load ImageNet MiT weights from the local file ``path`` into ``model`` (in place).

    Returns ``{"missing": model keys the file lacks, "unexpected": file keys that match nothing
    in the model (named without ``module.``/``segformer.``/``backbone.``), "adapted": model keys changed to fit (the first patch embedding when
    ``model.in_chans != 3``), "ignored": classification / decoder head keys}``, all logged.
    A shape mismatch raises :class:`PretrainedWeightsError` naming the key and both shapes.
    ``strict`` (default) also raises when model keys are missing or encoder keys of the file
    have no place in the model (a file of another MiT depth, e.g. b2 into b1).
    """
    state = read_weights_file(path)
    mapped, unexpected, ignored, fmt = convert_to_timm(state)
    target = model.state_dict()
    new_state, adapted, no_place = {}, [], []
    for key, (src, value) in mapped.items():
        if key not in target:
            no_place.append(src)
            continue
        if key == FIRST_CONV:
            value, changed = _first_conv(path, model, src, value, target[key].shape)
            adapted += [key] if changed else []
        else:
            _check_shape(path, model, key, src, value, target[key].shape)
        new_state[key] = value
    missing = [k for k in target if k not in new_state]
    report = {"missing": missing, "unexpected": sorted(unexpected + no_place), "adapted": adapted,
              "ignored": sorted(ignored)}
    if strict and (missing or no_place):
        raise PretrainedWeightsError(
            f"{path}: does not fit MiT-{model.size} (CADET.BACKBONE.SIZE = {model.size!r}): "
            f"{len(missing)} model keys missing (first: {missing[:3]}), {len(no_place)} encoder keys "
            f"of the file without a place in the model (first: {sorted(no_place)[:3]}); "
            f"is the file for another MiT size?"
        )
    model.load_state_dict(new_state, strict=False)
    _log_report(path, fmt, model, len(new_state), report)
    return report


def _log_report(path: str, fmt: str, model: MiT, n_loaded: int, report: dict[str, list[str]]) -> None:
    logger.info(f"[cadet] MiT-{model.size} ({model.in_chans} input channels): loaded {n_loaded} tensors "
                f"from {path} ({fmt} layout); ignored {len(report['ignored'])} head keys")
    if report["adapted"]:
        logger.info(f"[cadet] adapted to {model.in_chans} input channels (RGB filter mean x 3/{model.in_chans}): "
                    f"{report['adapted']}")
    if report["missing"]:
        logger.warning(f"[cadet] keys not in {path} (left at random init): {report['missing']}")
    if report["unexpected"]:
        logger.warning(f"[cadet] keys of {path} not used: {report['unexpected']}")
