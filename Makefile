# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data dir: ../shared when it exists and HARNESS_DATA_DIR is not already set.
ifeq ($(origin HARNESS_DATA_DIR), undefined)
  ifneq ($(wildcard ../shared/nb201),)
    export HARNESS_DATA_DIR := $(abspath ../shared)
  endif
endif
export HARNESS_CACHE_DIR ?= $(HOME)/.cache/supernet-harness
RUN_ARGS ?=

.PHONY: setup run test test-fast bench clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision as pinned for this machine (taken from local disk); PyPI's torchvision
	# does not import beside the CPU-only torch wheel.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: setup
	$(BIN)/harness run --suite nb201 --budget smoke $(RUN_ARGS)

test: setup
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not bench"

bench: setup
	$(BIN)/python -m pip install -q --no-deps xautodl
	$(BIN)/python -m pytest tests/bench -m bench --benchmark-enable --benchmark-only -q -p no:randomly

clean:
	rm -rf $(VENV) reports/runs
