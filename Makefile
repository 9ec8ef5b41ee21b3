.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of this version lies in pip's local wheel folder; any other version would
# make pip fetch a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0
NVCC := $(shell command -v nvcc 2>/dev/null)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test,bench,dev]"
	# tensorrt-stubs depends on the `tensorrt` download stub, which cannot install offline.
	$(BIN)/pip install -q --no-deps "tensorrt-stubs>=10.13"
	bash scripts/install_perf_analyzer.sh $(VENV)
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## create .venv and install the project with all extras (and perf_analyzer, where it runs)

.PHONY: perf-analyzer
perf-analyzer: venv ## (re)install NVIDIA's perf_analyzer into .venv/lib/perf_analyzer, wrapper .venv/bin/perf_analyzer
	bash scripts/install_perf_analyzer.sh $(VENV)

.PHONY: plugins
plugins: ## build plugins/build/libplugserve.so (kernels, CPU code, C ABI; TensorRT glue when headers are found)
ifeq ($(NVCC),)
	@echo "plugins: nvcc not found on PATH; skipping libplugserve.so (the onnxruntime runtime does not need it)"
else
	$(MAKE) -C plugins
endif

.PHONY: demo
demo: venv plugins ## the main job: export, build the repository, serve with tritonserver, verify over HTTP and gRPC
	$(BIN)/plugserve demo

.PHONY: repository
repository: venv ## export both models and build model_repository/ from models.yaml (keeps the newest 2 versions)
	$(BIN)/plugserve build --keep 2

.PHONY: serve
serve: venv plugins ## serve model_repository/ with tritonserver on :8000 http, :8001 grpc, :8002 metrics (Ctrl-C stops)
	$(BIN)/plugserve serve

.PHONY: test
test: venv plugins ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest

.PHONY: test-gpu
test-gpu: ## on a CUDA machine: build the plugins and run the GPU tests (plain python3, no venv needed)
	$(MAKE) -C plugins
	PYTHONPATH=src $(PYTHON) -m pytest -m gpu tests/gpu

.PHONY: test-tensorrt
test-tensorrt: ## in the NGC image (docker/): one-plugin engines vs PyTorch, then both models served as engines
	$(if $(NVCC),$(MAKE) -C plugins,@echo "test-tensorrt: no nvcc here; using the prebuilt plugins/build/libplugserve.so")
	PYTHONPATH=src $(PYTHON) -m pytest -m tensorrt -rs tests/tensorrt

.PHONY: bench-kernels
bench-kernels: ## on a CUDA machine: time the plugin kernels against their peers (PEER=<dir of torch_ms_deform_attn>)
	$(MAKE) -C plugins
	PYTHONPATH=src $(PYTHON) bench/kernels.py $(if $(PEER),--peer-path $(PEER))

# The Python of the GPU host the bundle is for (MAJOR.MINOR; the nvidia-pytriton wheel has stubs for 3.8-3.13).
BUNDLE_PYTHON ?= 3.12

.PHONY: bundle
bundle: venv plugins ## offline bundle for a GPU host without network: server, wheels, libplugserve.so (BUNDLE_PYTHON=3.12)
	$(BIN)/python scripts/bundle.py --python $(BUNDLE_PYTHON)

# Bench settings; override on the command line, e.g. `make bench BENCH_CONCURRENCY=1:16:2`.
BENCH_MODELS ?= super_resolution deformable_encoder
BENCH_PROTOCOLS ?= http grpc
BENCH_CONCURRENCY ?= 1:8
# Each step measured in rounds that alternate served and in-process: the VM's speed drifts by
# several percent from one minute to the next, and one round per side put that drift into the ratio.
BENCH_ROUNDS ?= 3
# none, system or cuda (a GPU host): tensors through registered shared memory, so the client's HTTP/gRPC parsing
# (on the same 2 cores as the server) leaves the comparison and Triton's own overhead remains.
BENCH_SHARED_MEMORY ?= none
# perf_analyzer (installed by `make venv`) or python (plugserve's own sender); the harness falls back
# to python, saying so, where perf_analyzer is missing.
BENCH_ENGINE ?= perf_analyzer
BENCH_ARGS ?=
# Per-model inputs: the encoder at 128x128 runs ~17 requests/s on 2 cores, so a measurement window
# holds enough of them to settle; at its profile's 256x256 (~4/s) the steps mostly hit the time cap.
BENCH_INPUTS_deformable_encoder ?= --shape image=3,128,128
LOCUST_PROTOCOL ?= http
LOCUST_HOST ?= localhost:$(if $(filter grpc,$(LOCUST_PROTOCOL)),8001,8000)
LOCUST_USERS ?= 4
LOCUST_TIME ?= 60s
LOCUST_TAGS ?= sr deformable

.PHONY: bench
bench: venv ## harness ceiling, then concurrency sweeps (with in-process ORT beside) of each model over HTTP and gRPC; needs a built model_repository
	for protocol in $(BENCH_PROTOCOLS); do \
	  $(BIN)/python bench/perf.py --calibrate --protocol $$protocol --concurrency $(BENCH_CONCURRENCY) \
	    --shared-memory $(BENCH_SHARED_MEMORY) --engine $(BENCH_ENGINE) || exit 1; \
	  $(foreach model,$(BENCH_MODELS),$(BIN)/python bench/perf.py --model $(model) --protocol $$protocol \
	    --concurrency $(BENCH_CONCURRENCY) --in-process --rounds $(BENCH_ROUNDS) $(BENCH_INPUTS_$(model)) \
	    --shared-memory $(BENCH_SHARED_MEMORY) --engine $(BENCH_ENGINE) $(BENCH_ARGS) || exit 1;) \
	done

.PHONY: locust
locust: venv ## locust, headless for LOCUST_TIME against a running server (LOCUST_HOST, LOCUST_PROTOCOL http|grpc); CSV stats in bench/results/
	mkdir -p bench/results
	$(BIN)/locust -f bench/locustfile.py --headless --users $(LOCUST_USERS) --spawn-rate $(LOCUST_USERS) \
	  --run-time $(LOCUST_TIME) --stop-timeout 30 --host $(LOCUST_HOST) --tags $(LOCUST_TAGS) --only-summary \
	  --csv bench/results/locust-$(LOCUST_PROTOCOL) $(if $(filter grpc,$(LOCUST_PROTOCOL)),TritonGrpcUser,TritonHttpUser)

SOAK_MINUTES ?= 10
.PHONY: soak
soak: venv ## every model over HTTP and gRPC at saturation for SOAK_MINUTES under plugserve's server; fails on a failed request or RSS growth
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

.PHONY: faults
faults: venv ## kill -9 of a stub under load (recovery time, requests lost) and each model's memory around its largest request
	$(BIN)/python bench/faults.py

.PHONY: report
report: venv ## write bench/results/report/report.md with PNG plots from bench/results/
	$(BIN)/plugserve report

.PHONY: lint
lint: venv ## ruff and mypy (the TensorRT module against tensorrt-stubs)
	$(BIN)/ruff check src tests bench build_engines.py
	# tensorrt-stubs is invisible to mypy as installed (no py.typed, invalid lines): use a repaired copy.
	$(BIN)/python scripts/typing_stubs.py .cache/typing
	MYPYPATH=.cache/typing $(BIN)/mypy src/plugserve

.PHONY: clean
clean: ## remove build outputs (keeps .venv)
	rm -rf plugins/build artifacts bench/results model_repository/*/ .model_repository.staging
