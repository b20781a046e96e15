# Set-up and checks. Every target creates the virtual environment it needs.
# uv is used when it is on PATH (fast, cached); plain venv + pip otherwise.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(shell command -v uv 2>/dev/null)

.PHONY: install test test-all test-wheel demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
ifdef UV
	uv venv --system-certs --allow-existing -q $(VENV) --python $(PYTHON)
	uv pip install --system-certs --compile-bytecode -q -p $(PY) -e ".[dev]"
else
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
endif
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

# Build the wheel, install it alone in a fresh venv, run configs list, demo and an export round
# trip outside the clone.
test-wheel: $(STAMP)
	$(PY) -m pytest -q -m slow tests/test_packaging.py

demo: $(STAMP)
	$(VENV)/bin/ssaseg demo

bench: $(STAMP)
	$(PY) benchmarks/classifier_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
