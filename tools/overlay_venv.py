"""Let the running venv see a base venv's packages after its own.

Usage: <overlay venv>/bin/python tools/overlay_venv.py BASE_VENV

Writes one .pth file into the overlay's site-packages that runs ``site.addsitedir`` on the base's
site-packages (so the base's own .pth files are processed too). A package installed in the overlay
shadows the base's copy; everything else (torch, its CUDA libraries) is stored once, in the base.
``make test-d2`` uses it for the official-Detectron2 venv.
"""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "cadet-base-venv.pth"


def site_packages(python):
    """The purelib folder of the interpreter ``python``."""
    cmd = [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    return subprocess.check_output(cmd, text=True).strip()


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__.strip().splitlines()[2])
    base_python = Path(argv[0]) / "bin" / "python"
    if not base_python.exists():
        sys.exit(f"overlay_venv: {base_python} not found: set up the base venv first (make setup)")
    if sys.prefix == sys.base_prefix:
        sys.exit("overlay_venv: run it with the overlay venv's python, not the system one")
    base = os.path.realpath(site_packages(str(base_python)))
    own = sysconfig.get_paths()["purelib"]
    if os.path.realpath(own) == base:
        sys.exit(f"overlay_venv: {argv[0]} is the running venv itself")
    pth = Path(own) / PTH_NAME
    pth.write_text(f"import site; site.addsitedir({base!r})\n")
    print(f"overlay_venv: {sys.prefix} sees {base} after its own packages")


if __name__ == "__main__":
    main(sys.argv[1:])
