#!/usr/bin/env python
"""Draw the fusion maps (CSSA attention, GAFF guidance) of a model on one image into a PNG.

    python tools/fusion_maps.py --config-file CFG.yaml --image X.npy --output out.png [KEY VALUE ...]

The image is read and resized like a test image (``MultiModalDatasetMapper``, is_train=False);
the weights come from ``MODEL.WEIGHTS`` (random initialisation when empty).
Trailing KEY VALUE pairs override config keys, e.g. ``MODEL.WEIGHTS output/model_final.pth``.
"""
from __future__ import annotations

import argparse

from cadet_d2.layout import modality_slices
from cadet_d2.data import MultiModalDatasetMapper
from cadet_d2.engine import load_config
from cadet_d2.inference import load_model
from cadet_d2.inference.fusion_maps import save_fusion_maps
from cadet_d2.utils.tool import run_tool


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="YAML config of the model")
    parser.add_argument("--image", required=True, help="(H, W, FILE_CHANNELS) uint8 .npy image")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    model = load_model(cfg)  # MODEL.WEIGHTS, loaded safely; a warning when empty
    image = MultiModalDatasetMapper(cfg, is_train=False)({"file_name": args.image})["image"]
    thermal = modality_slices(cfg).get("thermal")
    maps = save_fusion_maps(model, image, args.output, thermal_channel=thermal.start if thermal else None)
    print(f"{args.output}: {len(maps)} fusion maps" + "".join(f"\n  {k}" for k in maps)
          + ("" if maps else " (the model has none: early fusion, one stream, or only modules without maps, "
                              "such as sum, concat, frm_ffm); the picture shows the inputs only"))
    return maps


if __name__ == "__main__":
    run_tool(main)  # bad path, config or weights file: "error: ...", no traceback
