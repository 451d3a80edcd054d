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

# Live settings of `make run` / `make demo`: a JSON file of twin desired properties (LOCAL_TWIN_PATH), acks beside it.
LOCAL_TWIN_PATH ?= $(CURDIR)/data/twin.json
# `make simulate PATCH='{"saveAnnotated": true}'` pushes that desired patch; SIMULATE_ARGS passes more options.
PATCH ?=
SIMULATE_ARGS ?=
# `make demo DEMO_ARGS='--count 5 --interval 0.2'`: options of tools/demo.py after the defaults
DEMO_ARGS ?=

PYTEST_ARGS ?=

.DEFAULT_GOAL := help
# What `make install` downloads the first time (measured on Linux x86-64 into an empty venv and pip cache).
INSTALL_DOWNLOAD := 450 MB
INSTALL_DISK := 1.1 GB
INSTALL_BIGGEST := onnxruntime-gpu alone is 277 MB, opencv 60 MB

.PHONY: help install lock run demo simulate simulate-rollout test test-faults lint bench soak gpu-smoke model config validate deploy-check build push clean apt-deps settings-doc

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# Hash-locked requirements (`make lock` writes them from the direct pins in the requirements*.txt files).
DEV_LOCK := requirements-dev.lock
RUNTIME_LOCKS := $(MODULE_DIR)/requirements.lock $(MODULE_DIR)/requirements-gpu.lock $(MODULE_DIR)/requirements-debug.lock
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-emit-package pip --custom-compile-command "make lock"

$(STAMP): $(DEV_LOCK)
	@test -x $(PY) || { echo "make install: creating the virtual environment $(VENV) ($(PYTHON) -m venv)"; \
	  $(PYTHON) -m venv $(VENV); }
	@echo "make install: installing $$(grep -c '^[A-Za-z0-9].*==' $(DEV_LOCK)) hash-checked packages from $(DEV_LOCK) into $(VENV):"
	@echo "  the first time about $(INSTALL_DOWNLOAD) to download and $(INSTALL_DISK) on disk ($(INSTALL_BIGGEST));"
	@echo "  pip shows each download and its size below"
	$(PIP) install --disable-pip-version-check --progress-bar on --require-hashes -r $(DEV_LOCK)
	@touch $@
	@echo "make install: done ($(VENV))"

install: $(STAMP) ## create .venv and install the hash-locked packages (requirements-dev.lock), with pip's progress

lock: $(STAMP) ## re-resolve the requirements*.txt pins into the hash-locked *.lock files (uv pip compile)
	$(UV_COMPILE) $(MODULE_DIR)/requirements.txt -o $(MODULE_DIR)/requirements.lock
	$(UV_COMPILE) $(MODULE_DIR)/requirements-gpu.txt -o $(MODULE_DIR)/requirements-gpu.lock
	$(UV_COMPILE) $(MODULE_DIR)/requirements-debug.txt -o $(MODULE_DIR)/requirements-debug.lock
	$(UV_COMPILE) requirements-dev.txt -c $(MODULE_DIR)/requirements.lock -o $(DEV_LOCK)

# Debian packages the tests need; add one as `command package` (a packager for each missing command).
APT_PACKAGES := mosquitto:mosquitto smbd:samba smbnetfs:smbnetfs
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)

apt-deps: ## install the Debian packages the tests need (mosquitto broker, Samba + smbnetfs SMB rig) when missing
	@missing=""; for entry in $(APT_PACKAGES); do \
	  command -v "$${entry%%:*}" >/dev/null 2>&1 || missing="$$missing $${entry#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make apt-deps: installing Debian packages:$$missing (for the tests: MQTT broker of the IoT Edge rig, smbd and a FUSE SMB client for the SMB rig)"; \
	  if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null 2>&1; then \
	    echo "make apt-deps: not root and no sudo: run as root: apt-get install$$missing" >&2; exit 1; fi; \
	  [ -z "$(SUDO)" ] || echo "  (not root: using sudo; it may ask for your password)"; \
	  ($(SUDO) apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null \
	    || { echo "make apt-deps: apt-get install$$missing failed; as root run: apt-get install$$missing" >&2; exit 1; }; \
	fi

run: install ## run the module locally on the bundled demo model (folders under data/, live settings in data/twin.json)
	@mkdir -p "$(INPUT_DIR)" "$(OUTPUT_DIR)" "$(STATE_DIR)"
	@echo "edge-inference: drop frames into $(INPUT_DIR); results appear in $(OUTPUT_DIR)/results"
	@echo "  live settings: edit $(LOCAL_TWIN_PATH) (acks in twin.reported.json beside it); make demo drops frames for you"
	@LOCAL_TWIN_PATH="$(LOCAL_TWIN_PATH)" exec $(PY) -m edge_inference

demo: install ## run the module and drop 20 synthetic defect frames into the input folder (progress line; Ctrl-C stops both)
	@mkdir -p "$(INPUT_DIR)" "$(OUTPUT_DIR)" "$(STATE_DIR)"
	@LOCAL_TWIN_PATH="$(LOCAL_TWIN_PATH)" exec $(PY) tools/demo.py --input "$(INPUT_DIR)" --output "$(OUTPUT_DIR)" \
	  --count 20 --interval 1.0 --delay 3 $(DEMO_ARGS)

simulate: install apt-deps ## run the module against the local edgeHub rig (mosquitto + hub emulator); PATCH='{...}' pushes that desired patch
	@exec $(PY) tools/simulate.py $${PATCH:+--patch "$$PATCH"} $(SIMULATE_ARGS)

simulate-rollout: install apt-deps ## a model rollout and rollback from the twin, against the edgeHub rig and a loopback HTTPS server
	$(PY) tools/simulate_rollout.py

test: install apt-deps ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-faults: install apt-deps ## run the full fault-injection suite (slow)
	$(PY) -m pytest -m slow --timeout 1800 $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install apt-deps ## benchmarks: ceiling vs naive vs module, and the SMB share case; JSON under bench/results/
	$(PY) bench/run_bench.py

soak: install apt-deps ## hours of frames with faults injected on a schedule (not in CI)
	$(PY) bench/soak.py

gpu-smoke: install ## new GPU box first (< 2 min): REQUIRE_GPU load, providers, batch 1/max +-IO binding vs CPU, NVML; exit 0 ok, 1 off, 3 no GPU
	$(PY) tools/gpu_smoke.py $(SMOKE_ARGS)

model: ## retrain the bundled demo model (needs PyTorch CPU; never needed at run time)
	@test -x .venv-train/bin/python || $(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-train.txt
	.venv-train/bin/python tools/train_demo_model.py --out $(MODULE_DIR)/models/demo-defects.onnx

config: install ## expand the deployment templates (docker, debug, ase) into config/deployment.<target>.json
	$(PY) -m tools.manifest config

settings-doc: install ## rewrite the README settings table and .env.example from the table in settings.py
	$(PY) tools/settings_doc.py

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
