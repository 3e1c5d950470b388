"""Fusion maps (CSSA attention, GAFF guidance) of a tiny dual-stream model, and their PNG."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadet_d2.engine import load_config
from cadet_d2.inference.fusion_maps import fusion_maps, save_fusion_maps

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
    """48x64 is padded to 64x64 (size divisibility 32): its maps are the top-left 48x64 of the maps
    of the 64x64 image padded by hand with the pixel mean (0 after normalisation, as Detectron2 pads)."""
    assert model.backbone.size_divisibility == 32
    maps = fusion_maps(model, image)
    mean = torch.tensor(model.pixel_mean.flatten().tolist())[:, None, None]
    padded = mean.expand(5, 64, 64).clone()
    padded[:, :48, :64] = image
    full = fusion_maps(model, padded)
    assert set(full) == set(maps) == EXPECTED
    for name in EXPECTED:
        assert full[name].shape == (64, 64)
        np.testing.assert_allclose(maps[name], full[name][:48, :64], atol=1e-6, err_msg=name)
    # the maps are those of the stage's own resolution (stride 4 for stage 1), brought to the input
    raw = model.backbone.bottom_up.fusions[0].last_attention
    assert raw.shape == (1, 1, 16, 16)


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


def test_cli_says_when_the_model_has_no_maps(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fusion_maps_cli", os.path.join(ROOT, "tools", "fusion_maps.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    np.save(tmp_path / "x.npy", np.zeros((48, 64, 5), np.uint8))
    maps = cli.main(["--config-file", os.path.join(ROOT, "configs", "Base-CADET.yaml"), "--image",
                     str(tmp_path / "x.npy"), "--output", str(tmp_path / "m.png"), *OPTS,
                     "MODEL.BACKBONE.NAME", "build_mit_fpn_backbone"])  # early fusion: one 5-channel stream
    assert maps == {}
    assert "0 fusion maps (the model has none: early fusion" in capsys.readouterr().out
