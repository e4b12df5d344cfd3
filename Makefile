# fashion-edge: `make export` builds exported/ from scratch, `make test` checks everything.
# Both create (once) and reuse their own virtual environment in .venv and install the data set.
PYTHON      ?= python3.11
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
EXTRAS      := pipeline,tune,tflite,onnx,camera,photos,heic,mcu,dev
DEBIAN_DATA := /usr/share/datasets/fashion-mnist

# The TensorFlow environment: pipeline.TF_ENV (pipeline/__init__.py says why each), for the commands run
# here that do not import the package first (tests/test_config.py keeps the two equal).
export TF_USE_LEGACY_KERAS := 1
export CUDA_VISIBLE_DEVICES := -1
export TF_CPP_MIN_LOG_LEVEL := 2
export TF_ENABLE_ONEDNN_OPTS := 1
export PYTHONUNBUFFERED := 1

.PHONY: help venv data browser export tune test test-fast compat bench bench-baseline bundle bundle-offline pi-check clean

help:
	@echo "make export          build exported/ (train, prune, int8, TFLite + ONNX, parity gate); ~25 min on 2 cores"
	@echo "make tune ARGS=...   architecture search on Ray Tune (python -m pipeline tune --help) -> OUT/tune.json, pareto.png"
	@echo "make test            the test suite (quick exports on a subset; < 15 min)"
	@echo "make compat          the release in MediaPipe, OpenCV 4.x/5.x, tflite-runtime, LiteRT, onnxruntime -> README table"
	@echo "make bench           size / latency / memory benchmark -> benchmarks/results.{json,md}"
	@echo "make bench-baseline  accept exported/ and edge_runtime as the pinned references the gates compare against"
	@echo "make bundle          dist/fashion-edge-device-VERSION.tar.gz: what a device needs, with install.sh"
	@echo "make bundle-offline  the same with the aarch64 Python 3.11 wheels: installs on a Pi with no network"
	@echo "make pi-check        the bundle installed and run on an emulated arm64 Debian (Raspberry Pi OS base)"
	@echo "make clean           remove build/ caches (keeps .venv and exported/)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

venv: $(STAMP)

# The real data set is Debian's dataset-fashion-mnist; the loader also searches $$FASHION_MNIST_DIR
# and the Keras cache, then downloads from the official mirror with checksums.
data:
	@if [ -z "$$FASHION_MNIST_DIR" ] && [ ! -f $(DEBIAN_DATA)/t10k-images-idx3-ubyte.gz ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist ) \
	    || echo "warning: could not install dataset-fashion-mnist; the loader will try the Keras cache, then a download"; \
	fi

# The --serve page is tested in a real headless browser: Debian's chromium (Playwright never downloads one here).
browser:
	@if ! command -v chromium >/dev/null; then \
	  echo "installing Debian package chromium (for the --serve page test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium ) \
	    || echo "warning: could not install chromium; the browser test will be skipped"; \
	fi

export: venv data
	@start=$$(date +%s); \
	$(BIN)/python -m pipeline export $(ARGS) && \
	echo "make export: wall time $$(( $$(date +%s) - start )) s"

# Device-aware architecture search (Ray Tune, local or --address); ARGS needs at least --out DIR.
tune: venv data
	$(BIN)/python -m pipeline tune $(ARGS)

# The emulated Raspberry Pi check (pytest -m pi, ~3 min on a fresh machine) is its own CI step: make pi-check.
test: venv data browser
	$(BIN)/python -m pytest -q -m "not pi" $(ARGS)

test-fast: venv data
	$(BIN)/python -m pytest -q -m "not slow and not pi" $(ARGS)

# Clients we did not write, each in its own small venv under build/compat-venvs (made once): exported/compat.md
# and the table between the compat markers of README.md.
compat: venv data
	$(BIN)/python -m pipeline compat --exported exported --readme README.md $(ARGS)

# Benchmarks and regression gates (benchmarks/). Figures are measured on one thread; the gates in
# tests/test_regression.py compare each against its pinned reference (benchmarks/reference/) in the same run.
bench: venv data
	$(BIN)/python -m benchmarks.bench $(ARGS)

# Accept the release on purpose: re-measures, re-pins benchmarks/reference/ (artifacts, manifest, edge_runtime.zip)
# and rewrites benchmarks/baseline.json (budgets kept; raise one by hand), prints what changed; then review
# `git diff benchmarks/` and commit.
bench-baseline: venv data
	$(BIN)/python -m benchmarks.bench --write-baseline $(ARGS)

# The device bundle (python -m pipeline bundle --help): edge_runtime as a wheel, the release, install.sh.
bundle: venv
	$(BIN)/python -m pipeline bundle $(ARGS)

bundle-offline: venv
	$(BIN)/python -m pipeline bundle --with-wheels $(ARGS)

pi-check: venv data
	$(BIN)/python scripts/pi_check.py $(ARGS)

clean:
	rm -rf build .pytest_cache .hypothesis
