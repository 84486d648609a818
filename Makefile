# facesearch: `make run` sets everything up and starts both services; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS_DIR ?= models
# On small hosts OpenBLAS's and ONNX Runtime's thread pools fight each other (DESIGN.md).
export OPENBLAS_NUM_THREADS ?= 1
export MODELS_DIR

# Weight sources, installed without their dependencies: we read their files, never import them
# (facenet-pytorch would pull torch<2.3; face_recognition_models imports pkg_resources).
WEIGHT_PACKAGES := facenet-pytorch==2.6.0 face_recognition_models==0.3.0
# onnxruntime-gpu instead with: make venv ORT_EXTRA=gpu
ORT_EXTRA ?= cpu

.PHONY: help venv models run test lint typecheck bench eval clean

help:
	@echo "make run    - set up (.venv, models) and start embedder + search service on the embedded index"
	@echo "make test   - the whole test suite, as CI runs it"
	@echo "make models - build the ONNX models from registry-shipped weights"
	@echo "make bench / make eval - speed and accuracy tables"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(ORT_EXTRA),build,test]'
	$(PY) -m pip install --quiet --no-deps $(WEIGHT_PACKAGES)
	touch $@

venv: $(VENV)/.installed

$(MODELS_DIR)/manifest.json: $(VENV)/.installed
	$(PY) -m embedder_service.build --models-dir $(MODELS_DIR)

models: $(MODELS_DIR)/manifest.json

run: venv models
	$(PY) -m tools.run_all

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy embedder_service search_service facesearch_common tools

test: venv models lint
	$(VENV)/bin/pytest -q -ra

# The peers measured beside us: face_recognition (dlib HOG + dlib descriptor), installed without
# its `dlib` requirement (dlib-bin provides the module; `dlib` would compile for many minutes).
$(VENV)/.eval-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[$(ORT_EXTRA),build,test,eval]'
	$(PY) -m pip install --quiet --no-deps face_recognition==1.3.0
	touch $@

bench: venv models $(VENV)/.eval-installed
	$(PY) -m tools.bench $(BENCH_ARGS)

# Any LFW-layout folder and pairs file: make eval LFW_DIR=/path/to/lfw PAIRS=/path/to/pairs.txt
eval: venv models $(VENV)/.eval-installed
	$(PY) -m tools.eval $(EVAL_ARGS)

clean:
	rm -rf $(VENV) $(MODELS_DIR) .pytest_cache .mypy_cache .ruff_cache
