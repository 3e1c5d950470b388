"""Loading ImageNet MiT weights (SegFormer and Hugging Face layouts) from local files."""
from __future__ import annotations

import os
import re

import pytest
import torch

from cadet_d2.modeling.backbone.mit import MiT
from cadet_d2.modeling.backbone.pretrained import hf_to_timm, load_pretrained_mit

FIRST = "patch_embed.proj.weight"
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Base-CADET.yaml")

# timm block sub-module -> Hugging Face block sub-module (written independently of the loader)
TO_HF = {"norm1": "layer_norm_1", "attn.q": "attention.self.query", "attn.sr": "attention.self.sr",
         "attn.norm": "attention.self.layer_norm", "attn.proj": "attention.output.dense",
         "norm2": "layer_norm_2", "mlp.fc1": "mlp.dense1", "mlp.dwconv": "mlp.dwconv.dwconv",
         "mlp.fc2": "mlp.dense2"}


class NotATensor:
    """A custom object: a pickle holding it needs arbitrary unpickling."""

    def __init__(self) -> None:
        self.x = 1


def to_segformer(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm-layout MiT state dict -> SegFormer release keys (1-based stages), plus a head."""
    out = {}
    for k, v in sd.items():
        if k.startswith("patch_embed."):
            out["patch_embed1." + k[len("patch_embed."):]] = v
        elif m := re.fullmatch(r"stages\.(\d)\.downsample\.(.+)", k):
            out[f"patch_embed{int(m[1]) + 1}.{m[2]}"] = v
        elif m := re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)", k):
            out[f"block{int(m[1]) + 1}.{m[2]}.{m[3].replace('mlp.dwconv.', 'mlp.dwconv.dwconv.')}"] = v
        elif m := re.fullmatch(r"stages\.(\d)\.norm\.(.+)", k):
            out[f"norm{int(m[1]) + 1}.{m[2]}"] = v
        else:
            raise AssertionError(f"unmapped test key {k}")
    out["head.weight"] = torch.randn(1000, sd["stages.3.norm.weight"].shape[0])
    out["head.bias"] = torch.randn(1000)
    return out


def to_hf(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """timm-layout MiT state dict -> Hugging Face SegformerModel keys (0-based), kv split."""
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"(?:patch_embed|stages\.(\d)\.downsample)\.(proj|norm)\.(\w+)", k):
            out[f"encoder.patch_embeddings.{m[1] or 0}.{'proj' if m[2] == 'proj' else 'layer_norm'}.{m[3]}"] = v
        elif m := re.fullmatch(r"stages\.(\d)\.norm\.(\w+)", k):
            out[f"encoder.layer_norm.{m[1]}.{m[2]}"] = v
        elif m := re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)\.(\w+)", k):
            block = f"encoder.block.{m[1]}.{m[2]}"
            if m[3] == "attn.kv":
                key, value = v.chunk(2, dim=0)
                out[f"{block}.attention.self.key.{m[4]}"] = key.clone()
                out[f"{block}.attention.self.value.{m[4]}"] = value.clone()
            else:
                out[f"{block}.{TO_HF[m[3]]}.{m[4]}"] = v
        else:
            raise AssertionError(f"unmapped test key {k}")
    out = {prefix + k: v for k, v in out.items()}
    if prefix:
        out["classifier.weight"] = torch.randn(1000, 256)
    return out


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in MiT("b0", 3).state_dict().items()}


def assert_all_equal(model: MiT, sd: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        if k not in skip:
            assert torch.equal(got[k], v), k


def check_adapted(model: MiT, sd: dict[str, torch.Tensor]) -> None:
    """First conv: every channel = RGB mean x 3 / C; everything else copied."""
    c = model.in_chans
    w = model.state_dict()[FIRST]
    expected = sd[FIRST].mean(dim=1) * 3.0 / c
    assert w.shape == (sd[FIRST].shape[0], c, 7, 7)
    for i in range(c):
        torch.testing.assert_close(w[:, i], expected, rtol=0, atol=1e-7)
    assert_all_equal(model, sd, skip=(FIRST,))


def test_segformer_file_loads_every_tensor(tmp_path, source):
    path = str(tmp_path / "mit_b0.pth")
    torch.save(to_segformer(source), path)
    model = MiT("b0", 3)
    report = load_pretrained_mit(model, path)
    assert_all_equal(model, source)
    assert report["missing"] == [] and report["unexpected"] == [] and report["adapted"] == []
    assert report["ignored"] == ["head.bias", "head.weight"]


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_segformer_file_wrapped(tmp_path, source, wrapper):
    path = str(tmp_path / "wrapped.pth")
    torch.save({wrapper: to_segformer(source), "meta": {"epoch": 3}}, path)
    model = MiT("b0", 3)
    load_pretrained_mit(model, path)
    assert_all_equal(model, source)


@pytest.mark.parametrize("prefix", ["", "segformer."])
def test_hf_bin_loads_every_tensor(tmp_path, source, prefix):
    path = str(tmp_path / "pytorch_model.bin")
    torch.save(to_hf(source, prefix), path)
    model = MiT("b0", 3)
    report = load_pretrained_mit(model, path)
    assert_all_equal(model, source)
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["ignored"] == (["classifier.weight"] if prefix else [])


def test_hf_safetensors(tmp_path, source):
    from safetensors.torch import save_file

    path = str(tmp_path / "model.safetensors")
    save_file({k: v.contiguous() for k, v in to_hf(source, "segformer.").items()}, path)
    model = MiT("b0", 3)
    load_pretrained_mit(model, path)
    assert_all_equal(model, source)


def test_real_hf_key_names():
    """Key names as they appear in nvidia/mit-b0 (SegformerForImageClassification)."""
    pairs = {
        "segformer.encoder.patch_embeddings.0.proj.weight": "patch_embed.proj.weight",
        "segformer.encoder.patch_embeddings.0.layer_norm.bias": "patch_embed.norm.bias",
        "segformer.encoder.patch_embeddings.3.proj.weight": "stages.3.downsample.proj.weight",
        "segformer.encoder.block.0.1.layer_norm_1.weight": "stages.0.blocks.1.norm1.weight",
        "segformer.encoder.block.1.0.attention.self.query.bias": "stages.1.blocks.0.attn.q.bias",
        "segformer.encoder.block.0.0.attention.self.sr.weight": "stages.0.blocks.0.attn.sr.weight",
        "segformer.encoder.block.2.1.attention.self.layer_norm.weight": "stages.2.blocks.1.attn.norm.weight",
        "segformer.encoder.block.3.0.attention.output.dense.weight": "stages.3.blocks.0.attn.proj.weight",
        "segformer.encoder.block.0.0.layer_norm_2.bias": "stages.0.blocks.0.norm2.bias",
        "segformer.encoder.block.1.1.mlp.dense1.weight": "stages.1.blocks.1.mlp.fc1.weight",
        "segformer.encoder.block.1.1.mlp.dwconv.dwconv.weight": "stages.1.blocks.1.mlp.dwconv.weight",
        "segformer.encoder.block.1.1.mlp.dense2.bias": "stages.1.blocks.1.mlp.fc2.bias",
        "segformer.encoder.layer_norm.2.weight": "stages.2.norm.weight",
    }
    from cadet_d2.modeling.backbone.pretrained import strip_prefixes

    keys = set(MiT("b0", 3).state_dict())
    for hf, timm in pairs.items():
        assert hf_to_timm(strip_prefixes(hf)) == timm
        assert timm in keys
    assert hf_to_timm("encoder.block.0.0.attention.self.key.weight") == "stages.0.blocks.0.attn.kv.weight#key"
    assert hf_to_timm("decode_head.classifier.weight") is None


@pytest.mark.parametrize("fmt", ["segformer", "hf"])
def test_two_channel_model_gets_rgb_mean(tmp_path, source, fmt):
    path = str(tmp_path / "w.pth")
    torch.save(to_segformer(source) if fmt == "segformer" else to_hf(source), path)
    model = MiT("b0", 2)
    report = load_pretrained_mit(model, path)
    assert report["adapted"] == [FIRST]
    check_adapted(model, source)


def test_adapted_conv_keeps_response_to_grey_input(tmp_path, source):
    path = str(tmp_path / "w.pth")
    torch.save(to_segformer(source), path)
    model = MiT("b0", 2)
    load_pretrained_mit(model, path)
    x = torch.randn(1, 1, 32, 32)
    conv_rgb = torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), source[FIRST], padding=3, stride=4)
    conv_aux = torch.nn.functional.conv2d(x.repeat(1, 2, 1, 1), model.state_dict()[FIRST], padding=3, stride=4)
    torch.testing.assert_close(conv_aux, conv_rgb, rtol=1e-4, atol=1e-5)


def test_wrong_size_names_key_and_shapes(tmp_path, source):
    path = str(tmp_path / "mit_b0.pth")
    torch.save(to_segformer(source), path)
    with pytest.raises(ValueError) as e:
        load_pretrained_mit(MiT("b1", 3), path)
    msg = str(e.value)
    assert "patch_embed1.proj.weight" in msg and "(32, 3, 7, 7)" in msg and "(64, 3, 7, 7)" in msg


def test_missing_block_key(tmp_path, source):
    sd = to_segformer(source)
    del sd["block2.1.mlp.fc1.weight"]
    path = str(tmp_path / "w.pth")
    torch.save(sd, path)
    with pytest.raises(ValueError, match="stages.1.blocks.1.mlp.fc1.weight"):
        load_pretrained_mit(MiT("b0", 3), path)
    model = MiT("b0", 3)
    report = load_pretrained_mit(model, path, strict=False)
    assert report["missing"] == ["stages.1.blocks.1.mlp.fc1.weight"]
    assert_all_equal(model, source, skip=("stages.1.blocks.1.mlp.fc1.weight",))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_pretrained_mit(MiT("b0", 3), str(tmp_path / "nope.pth"))
    assert "CADET.BACKBONE.PRETRAINED" in str(e.value) and "nope.pth" in str(e.value)


def test_pickle_with_objects_is_refused(tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"w": torch.zeros(1), "obj": NotATensor()}, path)
    with pytest.raises(ValueError, match="not a plain weights file"):
        load_pretrained_mit(MiT("b0", 3), path)


def test_unknown_layout(tmp_path):
    path = str(tmp_path / "other.pth")
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no MiT encoder weights"):
        load_pretrained_mit(MiT("b0", 3), path)


def test_config_chain_loads_both_streams(tmp_path, source):
    from detectron2.modeling import build_model

    from cadet_d2.engine import load_config

    path = str(tmp_path / "mit_b0.pth")
    torch.save(to_segformer(source), path)
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0",
                               "CADET.BACKBONE.PRETRAINED", path,
                               "CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum"])
    bottom_up = build_model(cfg).backbone.bottom_up
    assert bottom_up.rgb_stream.in_chans == 3 and bottom_up.aux_stream.in_chans == 2
    assert_all_equal(bottom_up.rgb_stream, source)
    check_adapted(bottom_up.aux_stream, source)
