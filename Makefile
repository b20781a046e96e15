# Set-up and checks. Every target creates the virtual environment it needs.
# uv is used when it is on PATH (fast, cached); plain venv + pip otherwise.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(shell command -v uv 2>/dev/null)

.PHONY: install test test-all test-parity test-wheel demo bench compare clean

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

# Parity with mmsegmentation 0.30 (tests/parity, not part of `test`): mmcv 1.7.2 built without
# compiled ops (pure Python) and mmseg 0.30 in a side directory that the tests append to sys.path,
# so that they run on this venv's torch.
PARITY := .venv-parity
PARITY_STAMP := $(PARITY)/.installed
PARITY_PKGS := mmcv==1.7.2 mmsegmentation==0.30.0 addict yapf platformdirs prettytable wcwidth

$(PARITY_STAMP): $(STAMP) tests/parity/build-constraints.txt
	rm -rf $(PARITY)
ifdef UV
	MMCV_WITH_OPS=0 uv pip install --system-certs -q -p $(PY) --target $(PARITY) --no-deps \
		--build-constraints tests/parity/build-constraints.txt $(PARITY_PKGS)
else
	MMCV_WITH_OPS=0 $(PY) -m pip install -q --target $(PARITY) --no-deps \
		--build-constraint tests/parity/build-constraints.txt $(PARITY_PKGS)
endif
	touch $(PARITY_STAMP)

test-parity: $(PARITY_STAMP)
	SSASEG_PARITY=1 $(PY) -m pytest -q -p no:cacheprovider tests/parity

# Build the wheel, install it alone in a fresh venv, run configs list, demo and an export round
# trip outside the clone.
test-wheel: $(STAMP)
	$(PY) -m pytest -q -m slow tests/test_packaging.py

demo: $(STAMP)
	$(VENV)/bin/ssaseg demo

compare: $(STAMP)
	$(VENV)/bin/ssaseg compare

bench: $(STAMP)
	$(PY) benchmarks/classifier_overhead.py

clean:
	rm -rf $(VENV) $(PARITY) runs build *.egg-info src/*.egg-info
