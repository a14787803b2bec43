# mixkit: the README's two commands, `make demo` and `make test`, do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SYSTEM_PACKAGES := g++ pkg-config libopencv-dev libturbojpeg0-dev dataset-fashion-mnist

.PHONY: demo demo-ae install-demo-data bench-solvers test lint install install-core install-all install-system bench bench-gpu clean

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

# The demo's only system package: Debian's offline Fashion-MNIST (apt-get only when root and missing).
install-demo-data:
	@$(MAKE) --no-print-directory install-system SYSTEM_PACKAGES=dataset-fashion-mnist

# The main job on its embedded default: recipes/fashion_mnist.py trains a small PreAct ResNet with AlignMixup
# on the CPU (progress bars; 3 to 5 minutes on 2 cores), evaluates it on the 10,000 test images and prints
# the test top-1 and the run directory, then draws the alignment (`mixkit viz`) into <run>/alignment.png.
# A new demo run replaces the previous demo run directory.
DEMO_RUN ?= output/demo/fashion_mnist_alignmixup
demo: $(VENV)/.core-installed install-demo-data
	rm -rf $(DEMO_RUN)
	$(PY) recipes/fashion_mnist.py --output $(dir $(DEMO_RUN)) --experiment $(notdir $(DEMO_RUN))
	$(PY) -m mixkit.cli viz --run $(DEMO_RUN) --output $(DEMO_RUN)/alignment.png

# The demo with AlignMixup/AE (the paper's autoencoder variant: a decoder trained beside the classifier), then the
# mixes decoded into pictures (`mixkit viz --decoder`) into <run>/decoded.png; docs/images/decoded.png is one.
DEMO_AE_RUN ?= output/demo/fashion_mnist_alignmixup_ae
demo-ae: $(VENV)/.core-installed install-demo-data
	rm -rf $(DEMO_AE_RUN)
	$(PY) recipes/fashion_mnist.py --mixup alignmixup_ae --output $(dir $(DEMO_AE_RUN)) --experiment $(notdir $(DEMO_AE_RUN))
	$(PY) -m mixkit.cli viz --run $(DEMO_AE_RUN) --decoder --output $(DEMO_AE_RUN)/decoded.png

# The solver benchmark's headline rows (B=64, 7x7x2048, CPU, and the real-feature row), formerly `make demo`;
# the full grid is `$(PY) benchmarks/solvers.py`. Output under benchmarks/results/demo/.
bench-solvers: $(VENV)/.core-installed
	$(PY) benchmarks/solvers.py --device cpu --batch-sizes 64 --shapes 7x7x2048 --out-dir benchmarks/results/demo

test: $(VENV)/.all-installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(VENV)/.core-installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.all-installed
	$(PY) benchmarks/solvers.py
	$(PY) benchmarks/eps.py
	$(PY) benchmarks/loaders.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/overhead.py --preset cnn

# Every GPU measurement in one command, for a bare GPU machine (torch, timm, torchvision, accelerate): the
# system python, no venv, no pip; mixkit is imported from this tree. Writes *-cuda.json and PNGs under
# benchmarks/results/ and the summary gpu-cuda.json. `make bench-gpu GPU_ARGS="--device cpu --quick"` is
# the dry run without a GPU.
GPU_ARGS ?=
bench-gpu:
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) benchmarks/gpu.py $(GPU_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
