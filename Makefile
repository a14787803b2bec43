# mixkit: the README's two commands, `make demo` and `make test`, do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SYSTEM_PACKAGES := g++ pkg-config libopencv-dev libturbojpeg0-dev dataset-fashion-mnist

.PHONY: demo test lint install install-core install-all install-system bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# Core package: enough for the demo.
$(VENV)/.core-installed: $(PY) pyproject.toml
	$(PIP) install -q -e ".[dev]"
	touch $@

# System packages for ffcv's build and the offline Fashion-MNIST data; apt-get only when root and missing.
install-system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (install them as root: apt-get install$$missing)"; exit 1; fi; \
	fi

# Everything the whole suite needs: the ffcv and dali extras included.
$(VENV)/.all-installed: $(VENV)/.core-installed pyproject.toml
	$(MAKE) install-system
	$(PIP) install -q -e ".[dev,ffcv,dali]"
	touch $@

install-core: $(VENV)/.core-installed
install-all: $(VENV)/.all-installed
install: install-all

# The main job on its embedded default: the solver benchmark's target row (B=64, 7x7x2048, CPU) and
# the real-feature row; the full grid is `$(PY) benchmarks/solvers.py`. Output under benchmarks/results/demo/.
demo: $(VENV)/.core-installed
	$(PY) benchmarks/solvers.py --device cpu --batch-sizes 64 --shapes 7x7x2048 --out-dir benchmarks/results/demo

test: $(VENV)/.all-installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(VENV)/.core-installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.all-installed
	$(PY) benchmarks/solvers.py
	$(PY) benchmarks/loaders.py
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
