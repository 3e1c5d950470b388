#!/usr/bin/env bash
# Install Detectron2 into the active Python environment (PYTHON, default: python).
#
#   DETECTRON2_SOURCE unset      -> PyPI sdist pb1-detectron2==0.6 (upstream v0.6 Python code),
#                                   made buildable here: it lacks layers/csrc, so a stub C++
#                                   module is written, and Image.LINEAR (gone in Pillow >= 10)
#                                   becomes Image.BILINEAR. No Detectron2 code lives in this repo.
#   DETECTRON2_SOURCE=<source>   -> official Detectron2 built with its real C++/CUDA ops from
#                                   a source folder, a source archive (.tar.gz) or a git URL.
#                                   An archive's wheel is kept in DETECTRON2_WHEEL_CACHE (default
#                                   ~/.cache/cadet_d2/detectron2-wheels), keyed by the archive's
#                                   sha256 and the torch and Python versions, so a second venv
#                                   installs it without rebuilding.
# Faster R-CNN needs none of Detectron2's compiled ops; cadet_d2 evaluates with
# COCOEvaluator(use_fast_impl=False), so the stub is enough for everything in this project.
set -euo pipefail
PYTHON=${PYTHON:-python}

# Remember which source the environment holds, so that a new DETECTRON2_SOURCE reinstalls.
wanted=${DETECTRON2_SOURCE:-pypi:pb1-detectron2==0.6+stub2}
prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
stamp="$prefix/.detectron2-source"
if "$PYTHON" -c "import detectron2" 2>/dev/null && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  echo "detectron2 already installed from $wanted"
  exit 0
fi
"$PYTHON" -m pip uninstall -y -q detectron2 pb1-detectron2 2>/dev/null || true

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "${DETECTRON2_SOURCE:-}" ]; then
  echo "Installing official Detectron2 from source: $DETECTRON2_SOURCE"
  if [ -d "$DETECTRON2_SOURCE" ]; then
    "$PYTHON" -m pip install --no-build-isolation "$DETECTRON2_SOURCE"
  elif [ -f "$DETECTRON2_SOURCE" ]; then
    case "$DETECTRON2_SOURCE" in
      *.tar.gz|*.tgz) ;;
      *) echo "DETECTRON2_SOURCE=$DETECTRON2_SOURCE: a file must be a source archive (.tar.gz)" >&2; exit 2 ;;
    esac
    # The real path: pip's own wheel cache is keyed by the archive's URL, the same through any symlink.
    archive=$(realpath "$DETECTRON2_SOURCE")
    sha=$(sha256sum "$archive" | cut -c1-16)
    versions=$("$PYTHON" -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')
    cache="${DETECTRON2_WHEEL_CACHE:-$HOME/.cache/cadet_d2/detectron2-wheels}/$sha-$versions"
    if ! ls "$cache"/detectron2-*.whl >/dev/null 2>&1; then
      echo "Building a wheel from $archive into $cache"
      "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheel" "$archive"
      mkdir -p "$cache"
      mv "$work"/wheel/detectron2-*.whl "$cache"/
    else
      echo "Using the cached wheel in $cache"
    fi
    "$PYTHON" -m pip install -q "$cache"/detectron2-*.whl
  elif [[ "$DETECTRON2_SOURCE" == *://* || "$DETECTRON2_SOURCE" == git@* ]]; then
    "$PYTHON" -m pip install --no-build-isolation "git+$DETECTRON2_SOURCE"
  else
    echo "DETECTRON2_SOURCE=$DETECTRON2_SOURCE: no such folder or archive, and not a git URL" >&2
    exit 2
  fi
  echo "$wanted" > "$stamp"
  exit 0
fi

echo "Installing Detectron2 v0.6 from the PyPI sdist pb1-detectron2==0.6"
# torch must already be installed: the sdist's setup.py imports it to build metadata.
"$PYTHON" -m pip download --no-deps --no-binary :all: --no-build-isolation \
  pb1-detectron2==0.6 -d "$work" 2>&1 | grep -v "is ignored" || true
tarball=$(ls "$work"/pb1-detectron2-0.6.tar.gz)
tar -xzf "$tarball" -C "$work"
src="$work/pb1-detectron2-0.6"

# 1. The sdist ships no C++ sources: provide an empty extension module `detectron2._C`.
mkdir -p "$src/detectron2/layers/csrc"
cat > "$src/detectron2/layers/csrc/vision.cpp" <<'CPP'
// Stub for detectron2._C: the PyPI sdist has no csrc. cadet_d2 uses no compiled Detectron2 op;
// collect_env_info() asks for the two versions below.
#include <Python.h>
static PyObject* compiler_version(PyObject*, PyObject*) { return PyUnicode_FromString("none (stub _C)"); }
static PyObject* cuda_version(PyObject*, PyObject*) { return PyUnicode_FromString("none (stub _C)"); }
static PyMethodDef stub_methods[] = {
    {"get_compiler_version", compiler_version, METH_NOARGS, "stub"},
    {"get_cuda_version", cuda_version, METH_NOARGS, "stub"},
    {NULL, NULL, 0, NULL}};
static struct PyModuleDef stub_module = {PyModuleDef_HEAD_INIT, "_C", "detectron2 stub", -1, stub_methods};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&stub_module); }
CPP
# 2. Pillow >= 10 removed Image.LINEAR (an alias of BILINEAR).
sed -i 's/Image\.LINEAR/Image.BILINEAR/g' "$src/detectron2/data/transforms/transform.py"

"$PYTHON" -m pip install --no-build-isolation --no-deps "$src" 2>&1 | grep -v "is ignored"
echo "$wanted" > "$stamp"
"$PYTHON" -c "import detectron2; print('detectron2', detectron2.__version__, 'installed')"
