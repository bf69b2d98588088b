# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing and installs what it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# XLA's CPU fusion that sped the 224 px train step up ~40% on this CPU (see BENCHMARKS.md).
export XLA_FLAGS ?= --xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/python -m jtransfer.benchmark --config=configs/benchmark/demo.py --workdir=workdirs/demo

# Two workers (this machine's 2 cores), one test file per worker so module fixtures are built once:
# 4.8 min instead of 6.4 serially.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) workdirs
