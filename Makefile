# facesearch: `make run` sets everything up and starts both services; `make test` runs the suite.
# `make help` lists the targets: each one's `## ` comment is its line there.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS_DIR ?= models
# On small hosts OpenBLAS's and ONNX Runtime's thread pools fight each other (docs/decisions/benchmarks.md).
export OPENBLAS_NUM_THREADS ?= 1
export MODELS_DIR

# Weight sources, installed without their dependencies: we read their files, never import them
# (facenet-pytorch would pull torch<2.3; face_recognition_models imports pkg_resources).
WEIGHT_PACKAGES := facenet-pytorch==2.6.0 face_recognition_models==0.3.0
# onnxruntime-gpu instead with: make venv ORT_EXTRA=gpu
ORT_EXTRA ?= cpu
# The development venv holds both services (each Docker image installs only its own extra).
EXTRAS := embedder,search,opensearch,milvus,$(ORT_EXTRA),build,test
# What `make typecheck` checks.
TYPED := embedder_service search_service facesearch_common tools tests
# `make unit`: neither the built models nor ../shared/data, nothing slow (tests/conftest.py marks
# every test that asks for models_dir or shared_data, through any fixture).
UNIT_MARKERS := not models and not shared_data and not slow
# The ONNX builders and what they write into the manifest: a change to any of them rebuilds it.
MODEL_SOURCES := $(wildcard embedder_service/build/*.py) embedder_service/models/encoder.py \
	embedder_service/models/manifest.py

# Optional detectors beside MTCNN: `make models DETECTORS=yunet` downloads YuNet from its publisher
# (sha256-pinned; YUNET_FILE=path uses a local copy instead); DETECTORS=scrfd takes SCRFD from the
# PyPI sdist scrfd==0.3.0 (its weights: NON-COMMERCIAL research only). The list is remembered in
# DETECTOR_LIST, so later targets keep it; a new list rebuilds the manifest.
DETECTOR_LIST := $(MODELS_DIR)/.detectors
SCRFD_SDIST := scrfd==0.3.0
DOWNLOADS := $(VENV)/downloads
# $(call remember,VARIABLE,FILE): where VARIABLE is set (command line or environment), FILE holds its
# value afterwards; FILE is rewritten only when the value changed, so that its date marks a change.
define remember
$(if $(filter-out undefined,$(origin $(1))),$(shell mkdir -p $(dir $(2)) && \
	{ [ "$$(cat $(2) 2>/dev/null)" = "$($(1))" ] || echo "$($(1))" > $(2); }))
endef
$(call remember,DETECTORS,$(DETECTOR_LIST))
# Optional encoders beside dlib's: `make models ENCODER=facenet-vggface2` downloads FaceNet's 107 MB
# checkpoint from facenet-pytorch's GitHub releases (needs internet; sha256-pinned; FACENET_FILE=path
# uses a local copy) and converts it. Remembered in ENCODER_LIST, as DETECTORS is.
ENCODER_LIST := $(MODELS_DIR)/.encoders
$(call remember,ENCODER,$(ENCODER_LIST))

.PHONY: help venv models run lint typecheck test unit bench gpu-stage eval clean

help: ## List the targets
	@echo "make TARGET, where TARGET is one of:"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	$(PY) -m pip install --quiet --no-deps $(WEIGHT_PACKAGES)
	touch $@

venv: $(VENV)/.installed ## Create .venv with both services, the model builders and the test tools

# A failed or interrupted rebuild leaves no manifest behind, so stale models are never used.
$(MODELS_DIR)/manifest.json: $(VENV)/.installed $(MODEL_SOURCES) $(wildcard $(DETECTOR_LIST) $(ENCODER_LIST))
	rm -f $@
	detectors="$$(cat $(DETECTOR_LIST) 2>/dev/null)"; scrfd=; \
	if [[ ",$$detectors," == *,scrfd,* ]]; then \
		$(PY) -m pip download --quiet --no-deps --no-binary :all: -d $(DOWNLOADS) $(SCRFD_SDIST) || exit 1; \
		scrfd="--scrfd-file $(DOWNLOADS)/scrfd-0.3.0.tar.gz"; \
	fi; \
	$(PY) -m embedder_service.build --models-dir $(MODELS_DIR) --detectors "$$detectors" \
		$(if $(YUNET_FILE),--yunet-file $(YUNET_FILE)) $$scrfd \
		--encoders "$$(cat $(ENCODER_LIST) 2>/dev/null)" $(if $(FACENET_FILE),--facenet-file $(FACENET_FILE))

models: $(MODELS_DIR)/manifest.json ## Build the ONNX models (DETECTORS=yunet,scrfd adds detectors, ENCODER=facenet-vggface2 FaceNet; rebuilt when the builders change)

run: venv models ## Set up (.venv, models) and start embedder + search service on the embedded index
	$(PY) -m tools.run_all

lint: venv ## ruff check, ruff format --check and the import-linter architecture contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv ## mypy over every package, the tools and the tests
	$(VENV)/bin/mypy $(TYPED)

test: lint typecheck models ## The whole suite as CI runs it: lint, typecheck, every test
	$(VENV)/bin/pytest -q -ra

unit: venv ## Fast tier (under a minute): no models, no ../shared/data, nothing slow; on every core
	$(VENV)/bin/pytest -q -ra -n auto -m "$(UNIT_MARKERS)"

# The peers measured beside us: face_recognition (dlib HOG + dlib descriptor), installed without
# its `dlib` requirement (dlib-bin provides the module; `dlib` would compile for many minutes).
$(VENV)/.eval-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[$(EXTRAS),eval]'
	$(PY) -m pip install --quiet --no-deps face_recognition==1.3.0
	touch $@

bench: venv models $(VENV)/.eval-installed ## Speed tables (embedder, index, video); BENCH_ARGS=... passes options
	$(PY) -m tools.bench $(BENCH_ARGS)

# The GPU machines reach no registry: onnxruntime-gpu, the wheels, models and inputs travel in
# .gpu-a/ and .gpu-b/ (git-ignored); tools/gpu/run.sh runs the section there.
gpu-stage: venv models ## Stage the GPU section of make bench for a lent GPU machine (tools/gpu/run.sh)
	PY=$(PY) PEER=$(filter facenet-pytorch==%,$(WEIGHT_PACKAGES)) bash tools/gpu/prepare.sh

# Any LFW-layout folder and pairs file: make eval LFW_DIR=/path/to/lfw PAIRS=/path/to/pairs.txt
eval: venv models $(VENV)/.eval-installed ## Accuracy tables (LFW verification, retrieval, peers); EVAL_ARGS=... passes options
	$(PY) -m tools.eval $(EVAL_ARGS)

clean: ## Remove .venv, the models and the tool caches
	rm -rf $(VENV) $(MODELS_DIR) .pytest_cache .mypy_cache .ruff_cache
