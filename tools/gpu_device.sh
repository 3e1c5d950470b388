#!/usr/bin/env bash
# `make gpu-check` on an offline GPU machine, whose image has PyTorch but not Detectron2 and
# reaches no package index: installs the bundle of tools/gpu_bundle.py (built on a machine with
# the venv, copied there with the checkout), then runs tools/gpu_check.py:
#
#   bash tools/gpu_device.sh        # in the checkout, with .gpu_bundle/ beside tools/
#
# Results go to $OUT (a folder to copy back; output/gpu_check without it):
# gpu_benchmarks.md, results.json, log.txt, env.txt. Arguments are passed on to gpu_check.py.
# PYTHON: the interpreter (default python3: the image's, with PyTorch). Exit 2: no usable bundle;
# 3: cadet_d2 does not import (env.txt and log.txt say why); else gpu_check.py's exit status.
set -uo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-output/gpu_check}
BUNDLE=${BUNDLE:-.gpu_bundle}
mkdir -p "$OUT"
if ! ls "$BUNDLE"/wheels/*.whl >/dev/null 2>&1 || [ ! -d "$BUNDLE/site/detectron2" ]; then
  echo "gpu_device: no bundle in $BUNDLE: run 'python tools/gpu_bundle.py' before the device call, and carry $BUNDLE" >&2
  exit 2
fi
BUNDLE=$(cd "$BUNDLE" && pwd)
site=$(mktemp -d)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$BUNDLE"/wheels/*.whl \
  || { echo "gpu_device: the bundle's wheels did not install with $PYTHON (built for another Python?)" >&2; exit 2; }
export PYTHONPATH="$site:$BUNDLE/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi 2>&1 || echo "nvidia-smi: not found"
  cat "$BUNDLE/manifest.json"
  echo
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'| CUDA', torch.version.cuda, '| GPUs', torch.cuda.device_count())"
} >"$OUT/env.txt" 2>&1
if ! "$PYTHON" -c "import cadet_d2, detectron2; print('cadet_d2', cadet_d2.__version__, '| detectron2', \
detectron2.__version__, detectron2.__file__)" >>"$OUT/env.txt" 2>"$OUT/log.txt"; then
  cat "$OUT/log.txt" >&2
  exit 3
fi
"$PYTHON" tools/gpu_check.py --doc "$OUT/gpu_benchmarks.md" --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
