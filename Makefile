# Mustangs: two commands do all the set-up on a fresh Debian/Ubuntu machine (Python >= 3.10).
#   make quickstart   train a small grid -> optimize an ensemble -> export ONNX -> sample
#   make test         the whole test suite (what CI runs), with the docs extra (mkdocs build --strict is a test)
# On a GPU host: make quickstart EXTRAS=gpu,serve,dev  (onnxruntime-gpu instead of onnxruntime)
# On a host without a GPU, a CPU-only torch is ~5x smaller and faster to install:
#   make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV   ?= .venv
EXTRAS ?= cpu,serve,dev
PY     := $(VENV)/bin/python
RUN    ?= runs/quickstart
# Package index for torch + torchvision. Empty (default): the index pip is configured with (on PyPI a
# CUDA build, ~6 GB installed with its nvidia-* wheels; it runs on a CPU too). PyTorch's CPU index
# (https://download.pytorch.org/whl/cpu) gives a CPU-only build. Installed first, then kept by the
# project's install (torch>=2.4 is satisfied).
TORCH_INDEX ?=

.PHONY: setup data quickstart serve test test-fast docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed data

# The docs extra (mkdocs, mkdocs-material, mkdocstrings): what tests/test_docs.py builds the site with.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[$(EXTRAS),docs]"
	touch $@

# Fashion-MNIST from Debian's package when we are root and it is missing (no download at run time).
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

quickstart: setup
	bash scripts/quickstart.sh $(RUN)

# Serve the quickstart's ONNX ensemble over HTTP (BentoML) on 127.0.0.1:$(PORT).
PORT ?= 3000
serve: setup
	$(VENV)/bin/serving serve $(RUN)/ensemble.onnx --port $(PORT)

test: setup $(VENV)/.docs-installed
	$(PY) -m pytest -q -ra

# The documentation site (docs/, mkdocs.yml) in site/; `$(VENV)/bin/mkdocs serve` to read it locally.
docs: $(VENV)/.docs-installed
	$(VENV)/bin/mkdocs build --strict

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache site
