#!/usr/bin/env python
"""Pack what an offline GPU machine lacks into one ignored folder, so `tools/gpu_device.sh` runs there.

The machine (docs/scaling.md, "On an offline GPU machine") has Python 3.12 with PyTorch,
torchvision, numpy, OpenCV, matplotlib, ONNX and pytest, but no Detectron2 and none of its
small dependencies, and it reaches no package index. This writes, here, with pip:

    .gpu_bundle/wheels/   wheels of BUNDLED (versions of this venv) for --python-version
    .gpu_bundle/site/detectron2/   this venv's Detectron2 v0.6 (pure Python; its stub _C
                          extension replaced by _C.py, so it imports on any Python)
    .gpu_bundle/manifest.json

    python tools/gpu_bundle.py                          # for the GPU machine's Python 3.12
    python tools/gpu_bundle.py --python-version 3.11    # for this machine (a check of the bundle)

Then copy the checkout with ``.gpu_bundle/`` to that machine and run `bash tools/gpu_device.sh`
there.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

# Detectron2 v0.6's imports that the GPU machine's image lacks, and timm pinned to the version
# tested here (the MiT backbone builds on its pvt_v2 module).
BUNDLED = ("fvcore", "iopath", "yacs", "termcolor", "omegaconf", "pycocotools", "timm")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
STUB_C = '''"""detectron2._C stand-in: cadet_d2 uses none of Detectron2's compiled ops."""


def get_compiler_version():
    return "none (stub _C)"


def get_cuda_version():
    return "none (stub _C)"
'''


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch_wheel(name: str, version: str, python_version: str, dest: str) -> str:
    """The wheel of ``name==version`` for CPython ``python_version`` on x86-64 Linux, into ``dest``:
    a binary from the index, else one built here from the sdist, which must be pure Python."""
    spec = f"{name}=={version}"
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    got = pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
              "--implementation", "cp", *plat, "-d", dest, spec)
    if got.returncode != 0:
        with tempfile.TemporaryDirectory() as tmp:
            built = pip("wheel", "-q", "--no-deps", "-w", tmp, spec)
            if built.returncode != 0:
                raise SystemExit(f"gpu_bundle: no wheel of {spec}:\n{got.stderr[-1500:]}\n{built.stderr[-1500:]}")
            wheel = os.listdir(tmp)[0]
            if not wheel.endswith("-py3-none-any.whl"):
                raise SystemExit(f"gpu_bundle: {spec} built as {wheel}, which is not pure Python")
            shutil.move(os.path.join(tmp, wheel), os.path.join(dest, wheel))
    key = name.replace("-", "_").lower()
    found = [f for f in os.listdir(dest) if f.lower().startswith(key + "-" + version.lower())]
    if not found:
        raise SystemExit(f"gpu_bundle: pip ran but left no wheel of {spec} in {dest}")
    return found[0]


def copy_detectron2(dest: str) -> str:
    """This venv's Detectron2 package into ``dest/detectron2``, with ``_C.py`` for its stub
    extension; refuses a Detectron2 whose ``_C`` holds real compiled ops."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gpu_bundle: Detectron2 is not installed in this Python (run `make setup` first)")
    src = list(spec.submodule_search_locations)[0]
    from detectron2 import _C  # noqa: PLC0415

    if "stub" not in _C.get_compiler_version():
        raise SystemExit(f"gpu_bundle: {src} is a Detectron2 with compiled ops; the bundle takes the "
                         "pure-Python v0.6 of `make setup` (.venv)")
    target = os.path.join(dest, "detectron2")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    with open(os.path.join(target, "_C.py"), "w", encoding="utf-8") as f:
        f.write(STUB_C)
    return src


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".gpu_bundle", help="the folder to write (it is replaced)")
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    args = p.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    wheels, site = os.path.join(args.out, "wheels"), os.path.join(args.out, "site")
    os.makedirs(wheels)
    os.makedirs(site)
    versions = {name: metadata.version(name) for name in BUNDLED}
    files = [fetch_wheel(name, v, args.python_version, wheels) for name, v in versions.items()]
    d2_source = copy_detectron2(site)
    manifest = {"python_version": args.python_version, "wheels": files, "versions": versions,
                "detectron2": {"version": metadata.version("pb1-detectron2"), "from": d2_source}}
    with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.out) for f in fs)
    print(f"gpu_bundle: {args.out}: {len(files)} wheels + Detectron2 {manifest['detectron2']['version']}, "
          f"{size / 2**20:.1f} MiB, for Python {args.python_version}", file=sys.stderr)
    return manifest


if __name__ == "__main__":
    main()
