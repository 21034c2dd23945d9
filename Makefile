# Quick start: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# mypy checks the TensorRT code against tensorrt-stubs (TensorRT itself cannot be installed here).
TYPED  := export/tensorrt.py cyclegan_deploy/backends/tensorrt.py

.PHONY: demo test lint typecheck setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	# torch 2.13.0 is the CPU build on the project's machines; pin it before anything can pull another.
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[train,export,cpu,openvino,int8,dev,scale]'
	# tensorrt-stubs declares a dependency on tensorrt itself, which has no installable wheel here.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps 'tensorrt-stubs>=10.0'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/python scripts/typecheck_tensorrt.py $(TYPED)

test: lint typecheck
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache .mypy_cache
