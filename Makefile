# Two entry points on a fresh machine:
#   make demo   set up .venv and run the end-to-end demo on simulated data
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pinned to the builds that open_clip/timm import cleanly with
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test venv install install-dev lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

# The stamp files re-run the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e ".[offline-weights,fmri,names]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/neurodecode demo --out $(DEMO_OUT)

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(PY) -m ruff check neurodecode tests benchmarks

# every benchmark of benchmarks/ -> benchmarks/results/bench.{json,md}; BENCH_ARGS=--quick for the smoke run
bench: install-dev
	$(PY) benchmarks/run_all.py --out benchmarks/results $(BENCH_ARGS)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build dist *.egg-info
