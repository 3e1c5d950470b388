# cadet_d2: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON_SYS ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cadet-setup
DATA ?= datasets/synth
DEMO_OUT ?= output/demo
# Official Detectron2 for `make test-d2`: a source archive, folder or git URL, built into D2_VENV,
# a thin venv over VENV (tools/overlay_venv.py): it holds Detectron2 and cadet_d2 only, and takes
# torch and the rest from VENV, so the two venvs store torch once (about 6 GB).
D2_SOURCE ?= ../shared/vendor/detectron2-02b5c4e.tar.gz
D2_VENV ?= .venv-d2

.PHONY: setup demo data test test-d2 versions clean

setup: $(STAMP) versions

$(STAMP): requirements.txt setup.py tools/install_detectron2.sh
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, timm, fvcore, pycocotools, cv2" 
	PYTHON=$(PY) bash tools/install_detectron2.sh
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import cadet_d2, detectron2"
	@touch $(STAMP)

versions:
	@$(PY) -W ignore -c "import sys, torch, torchvision, detectron2, timm, numpy, cv2, cadet_d2; \
	print('python', sys.version.split()[0], '| torch', torch.__version__, '| torchvision', torchvision.__version__, \
	'| detectron2', detectron2.__version__, '| timm', timm.__version__, '| numpy', numpy.__version__, \
	'| opencv', cv2.__version__, '| cadet_d2', cadet_d2.__version__)"

data: setup
	$(PY) tools/make_synthetic.py --out $(DATA)

demo: data
	$(PY) tools/train_net.py --config-file configs/demo.yaml OUTPUT_DIR $(DEMO_OUT)
	$(PY) tools/show_metrics.py $(DEMO_OUT)/eval_metrics.json

# pytest's exit code 5 (no test collected) fails too. TEST_WORKERS pytest-xdist processes (0: one
# process), each with one intra-op thread (tests/conftest.py); a test file stays on one worker, so
# its module fixtures are built once and the SLURM tests share one cluster. The OpenVINO tests run
# afterwards in a process of their own (ISOLATED), so that no other test shares a process with the
# OpenVINO runtime and its thread pool (an xdist worker that had run them died in a later test).
TEST_WORKERS ?= 2
ISOLATED ?= tests/test_openvino.py
test: setup
	@$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 $(addprefix --ignore=,$(ISOLATED)) tests; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; rc=1; fi; \
	$(PY) -m pytest -q -p no:xdist --durations=5 $(ISOLATED); rc2=$$?; \
	if [ $$rc2 -eq 5 ]; then echo "pytest collected no OpenVINO tests: failing" >&2; rc2=1; fi; \
	[ $$rc -eq 0 ] && [ $$rc2 -eq 0 ]

# The whole suite again, on official Detectron2 (D2_SOURCE) in the venv D2_VENV.
test-d2: setup
	@test -x $(D2_VENV)/bin/python || $(PYTHON_SYS) -m venv $(D2_VENV)
	@$(D2_VENV)/bin/python tools/overlay_venv.py $(VENV)
	$(MAKE) test VENV=$(D2_VENV) DETECTRON2_SOURCE=$(D2_SOURCE)

clean:
	rm -rf $(VENV) $(D2_VENV) output

# One GPU, <= 8 min: the CUDA tests (pytest -m cuda), then the benchmark matrix into docs/gpu_benchmarks.md.
.PHONY: gpu-check gpu-bundle
gpu-check: setup
	$(PY) tools/gpu_check.py

# For an offline GPU machine without Detectron2 or a package index: .gpu_bundle (tools/gpu_bundle.py),
# copied there with the checkout, where `bash tools/gpu_device.sh` runs (docs/scaling.md).
gpu-bundle: setup
	$(PY) tools/gpu_bundle.py
