#!/usr/bin/env python
"""Train or evaluate a cadet_d2 model (Detectron2's train_net conventions).

    python tools/train_net.py --config-file configs/demo.yaml
    python tools/train_net.py --config-file configs/demo.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file configs/demo.yaml --resume
"""
from cadet_d2.engine.train import cli

if __name__ == "__main__":
    cli()
