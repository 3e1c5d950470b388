"""Fusion maps (CSSA attention, GAFF guidance) of a tiny dual-stream model, and their PNG."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadet_d2.engine import load_config
from cadet_d2.utils.attention import fusion_maps, save_fusion_maps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTS = ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "CADET.FUSION.NAME", "cssa",
        "CADET.FUSION.STAGES", "[1, 2]", "CADET.FUSION.DEFAULT", "gaff",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]
EXPECTED = {"stage1/cssa_attention", "stage2/cssa_attention",
            "stage3/gaff_guidance_rgb", "stage3/gaff_guidance_aux",
            "stage4/gaff_guidance_rgb", "stage4/gaff_guidance_aux"}


@pytest.fixture(scope="module")
def model():
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return build_model(load_config(os.path.join(ROOT, "configs", "Base-CADET.yaml"), OPTS))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(5, 48, 64, generator=torch.Generator().manual_seed(1)) * 255


def test_maps_per_stage(model, image):
    model.train()
    maps = fusion_maps(model, image)
    assert model.training  # mode restored
    assert set(maps) == EXPECTED
    for name, m in maps.items():
        assert m.shape == (48, 64) and m.dtype == np.float32, name
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1, name
        assert m.std() > 0, name


def test_maps_are_cropped_from_padded_input(model, image):
    """48x64 is padded to 64x64 (size divisibility 32): the map is resized to 64x64 and cropped."""
    maps = fusion_maps(model, image)
    fusions = model.backbone.bottom_up.fusions
    raw = fusions[0].last_attention  # (1, 1, 16, 16)
    assert raw.shape == (1, 1, 16, 16)
    expected = F.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=False)[0, 0, :48, :64]
    np.testing.assert_allclose(maps["stage1/cssa_attention"], expected.numpy(), atol=1e-6)
    guidance = fusions[2].last_guidance_aux.mean(dim=1, keepdim=True)  # (1, 1, 4, 4)
    expected = F.interpolate(guidance, size=(64, 64), mode="bilinear", align_corners=False)[0, 0, :48, :64]
    np.testing.assert_allclose(maps["stage3/gaff_guidance_aux"], expected.numpy(), atol=1e-6)


def test_maps_follow_the_image(model, image):
    first = fusion_maps(model, image)
    other = fusion_maps(model, torch.flip(image, dims=[2]))
    assert not np.allclose(first["stage1/cssa_attention"], other["stage1/cssa_attention"])


def test_png_written(model, image, tmp_path):
    import matplotlib.image

    path = str(tmp_path / "maps.png")
    maps = save_fusion_maps(model, image, path)
    assert set(maps) == EXPECTED
    png = matplotlib.image.imread(path)
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100
    assert png[..., :3].std() > 0


def test_cli_uses_weights_and_mapper(model, tmp_path):
    spec = importlib.util.spec_from_file_location("fusion_maps_cli", os.path.join(ROOT, "tools", "fusion_maps.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    array = np.random.default_rng(2).integers(0, 255, size=(48, 64, 5), dtype=np.uint8)
    np.save(tmp_path / "x.npy", array)
    weights = str(tmp_path / "w.pth")
    torch.save({"model": model.state_dict()}, weights)
    out = str(tmp_path / "out.png")
    maps = cli.main(["--config-file", os.path.join(ROOT, "configs", "Base-CADET.yaml"),
                     "--image", str(tmp_path / "x.npy"), "--output", out, *OPTS, "MODEL.WEIGHTS", weights])
    assert os.path.getsize(out) > 0 and set(maps) == EXPECTED
    # the test mapper resizes 48x64 to a shorter side of 64: 64x85
    image = F.interpolate(torch.from_numpy(array).permute(2, 0, 1)[None].float(), size=(64, 85))[0]
    assert maps["stage1/cssa_attention"].shape == (64, 85)
    # same weights as the fixture model: its maps on the mapped image
    from cadet_d2.data import MultiModalDatasetMapper

    cfg = load_config(os.path.join(ROOT, "configs", "Base-CADET.yaml"), OPTS)
    mapped = MultiModalDatasetMapper(cfg, is_train=False)({"file_name": str(tmp_path / "x.npy")})["image"]
    assert mapped.shape == image.shape
    ref = fusion_maps(model, mapped)
    for k in EXPECTED:
        np.testing.assert_allclose(maps[k], ref[k], atol=1e-5)


def test_modules_without_maps_are_skipped(model, image):
    from cadet_d2.modeling.fusion.simple import SumFusion

    fusions = model.backbone.bottom_up.fusions
    gaff = fusions[3]
    fusions[3] = SumFusion(channels=256, stage=4)
    try:
        maps = fusion_maps(model, image)
    finally:
        fusions[3] = gaff
    assert set(maps) == {k for k in EXPECTED if not k.startswith("stage4/")}
