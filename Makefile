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
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## create .venv and install the project with all extras

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

.PHONY: test
test: venv plugins ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest

.PHONY: lint
lint: venv ## ruff and mypy (the TensorRT module against tensorrt-stubs)
	$(BIN)/ruff check src tests bench build_engines.py
	$(BIN)/mypy src/plugserve

.PHONY: clean
clean: ## remove build outputs (keeps .venv)
	rm -rf plugins/build artifacts bench/results model_repository/*/
