# The two commands of a fresh clone: `make demo` and `make test` (both create .venv when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false

.PHONY: demo test test-all lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when pyproject.toml changes. torch 2.14.1 + torchvision 0.29.1 come from this machine's local wheels.
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q -e ".[onnxruntime,ultralytics,modelopt,brevitas,openvino,plot,stream,ray,dev]"
	touch $@

# The main job on the bundled real model and images: calibrate on images 0-31, evaluate on 32-63.
demo: $(VENV)/.installed
	$(BIN)/yoloquant run --model assets/weights/yolov8n.pt \
		--calib assets/coco64/images --calib-images 32 \
		--eval assets/coco64.yaml --eval-offset 32 \
		--precision fp32,int8 --backend ort-cpu --out runs/demo

# The default test run (~9 min on 2 cores; CI's budget is ~12). pytest exit code 5 = no tests collected: a failure.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not gpu and not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Everything this machine can run, the slow tests too (`-m slow`: minutes each; the GPU tests skip without one).
test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-all: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
