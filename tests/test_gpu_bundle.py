"""The bundle for an offline GPU machine (tools/gpu_bundle.py) and the script that runs there
(tools/gpu_device.sh), on this machine: Detectron2 copied so that it imports from the bundle alone,
and the script's refusal without a bundle."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bundle_tool():
    spec = importlib.util.spec_from_file_location("gpu_bundle", os.path.join(HERE, "tools", "gpu_bundle.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _stub_detectron2() -> bool:
    from detectron2 import _C

    return "stub" in _C.get_compiler_version()


def test_detectron2_copy_imports_without_its_compiled_stub(tmp_path):
    tool = _bundle_tool()
    if not _stub_detectron2():  # official Detectron2, with compiled ops: not portable, refused
        with pytest.raises(SystemExit, match="compiled ops"):
            tool.copy_detectron2(str(tmp_path))
        return
    tool.copy_detectron2(str(tmp_path))
    copied = tmp_path / "detectron2"
    files = [os.path.join(r, f) for r, _, fs in os.walk(copied) for f in fs]
    assert (copied / "_C.py").is_file() and (copied / "modeling" / "meta_arch" / "rcnn.py").is_file()
    assert not [f for f in files if f.endswith((".so", ".pyc"))]
    # imported from the bundle folder first on the path, it is that copy, and it builds a model
    code = ("import detectron2, detectron2._C as c, cadet_d2; from cadet_d2.engine import load_config; "
            "from detectron2.modeling import build_model; "
            "build_model(load_config('configs/demo.yaml', ['MODEL.DEVICE', 'cpu'])); "
            "print(detectron2.__file__, c.get_compiler_version())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), HERE])}
    r = subprocess.run([sys.executable, "-c", code], cwd=HERE, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == [str(copied / "__init__.py"), "none", "(stub", "_C)"]


def test_device_script_without_a_bundle_says_what_to_do(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "BUNDLE": str(tmp_path / "none")}
    r = subprocess.run(["bash", os.path.join(HERE, "tools", "gpu_device.sh")], cwd=HERE, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"no bundle in {tmp_path / 'none'}: run 'python tools/gpu_bundle.py'" in r.stderr

