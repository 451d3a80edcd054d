# edge-inference: every target installs what it needs itself (venv, Python packages, Debian packages).
# `make help` lists the targets.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MODULE_DIR := modules/edge-inference
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/$(MODULE_DIR):$(CURDIR)

# Local defaults for `make run`: everything under data/ (git-ignored); the environment wins.
INPUT_DIR ?= $(CURDIR)/data/input
OUTPUT_DIR ?= $(CURDIR)/data/output
STATE_DIR ?= $(CURDIR)/data/state
export INPUT_DIR OUTPUT_DIR STATE_DIR

PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run demo simulate test test-faults lint bench soak model config validate deploy-check build push clean apt-deps

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt $(MODULE_DIR)/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

install: $(STAMP) ## create .venv and install the pinned packages

apt-deps: ## install the Debian packages the tests need (mosquitto broker) when missing
	@command -v mosquitto >/dev/null 2>&1 || { \
	  echo "installing mosquitto (MQTT broker for the IoT Edge test rig)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }

run: install ## run the module locally on the bundled demo model (folders under data/)
	@mkdir -p "$(INPUT_DIR)" "$(OUTPUT_DIR)" "$(STATE_DIR)"
	@echo "edge-inference: drop frames into $(INPUT_DIR); results appear in $(OUTPUT_DIR)/results"
	@echo "  (make demo drops synthetic defect frames for you)"
	$(PY) -m edge_inference

demo: install ## run the module and drop synthetic defect frames into the input folder
	@mkdir -p "$(INPUT_DIR)" "$(OUTPUT_DIR)" "$(STATE_DIR)"
	$(PY) tools/drop_frames.py --to "$(INPUT_DIR)" --count 20 --interval 1.0 --delay 3 & \
	  trap 'kill $$! 2>/dev/null' EXIT; $(PY) -m edge_inference

simulate: install apt-deps ## run the module against the local edgeHub rig (mosquitto + hub emulator)
	$(PY) tools/simulate.py

test: install apt-deps ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-faults: install apt-deps ## run the full fault-injection suite (slow)
	$(PY) -m pytest -m slow --timeout 1800 $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install ## benchmarks: ceiling vs naive vs module; JSON under bench/results/
	$(PY) bench/run_bench.py

soak: install apt-deps ## hours of frames with faults injected on a schedule (not in CI)
	$(PY) bench/soak.py

model: ## retrain the bundled demo model (needs PyTorch CPU; never needed at run time)
	@test -x .venv-train/bin/python || $(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-train.txt
	.venv-train/bin/python tools/train_demo_model.py --out $(MODULE_DIR)/models/demo-defects.onnx

config: install ## expand the deployment templates (docker, debug, ase) into config/deployment.<target>.json
	$(PY) -m tools.manifest config

validate: install ## validate config/*.json against the schemas and each target's rules (placeholders: warnings)
	$(PY) -m tools.manifest validate

deploy-check: config ## ready to deploy? validate --strict: .env.example placeholders left in .env fail too
	$(PY) -m tools.manifest validate --strict

build: ## build the module images with docker buildx (needs a Docker engine)
	tools/docker.sh build

push: ## push the module images (needs a Docker engine and registry login)
	tools/docker.sh push

clean: ## remove the venvs, caches and local data
	rm -rf $(VENV) .venv-train .pytest_cache .mypy_cache .ruff_cache data config
