# AlignScope — every target installs what it needs into a local .venv first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PYTHON ?= python3

.PHONY: help install browser test validate site serve reproduce train bench bench-site

help:
	@echo "make reproduce   install if needed, run the experiment matrix (plugins/reproduce.yaml) on CPU, build the site"
	@echo "make test        install if needed, run the test suite"
	@echo "make validate    check every YAML record (file:line errors)"
	@echo "make site        generate pages from the records and build site/ (mkdocs --strict)"
	@echo "make serve       preview the site on http://127.0.0.1:8000, regenerated when a record changes"
	@echo "make train       retrain the embedded tiny LLaVA (about 20 minutes on 2 cores)"
	@echo "make bench       speed of our own code (unchanged make reproduce, world, adapter, cost per experiment, throughput, cold/warm reproduce of the frozen-method matrix)"
	@echo "make bench-site  site generation and build for a synthetic 10,000-paper knowledge base"

install: $(STAMP)

# torch==2.13.0 goes in first (a CPU build on these machines); a torch you already have is kept.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -qq --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -qq --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

test: install browser
	$(PY) -m pytest

# Debian's chromium for the browser tests (Playwright drives it and never downloads a browser).
# Outside CI a failed install only warns, and the browser tests are skipped; under CI it is an error.
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium for the browser tests (apt-get)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } || { \
	    if [ -n "$$CI" ]; then echo "error: could not install chromium" >&2; exit 1; fi; \
	    echo "warning: could not install chromium; the browser tests will be skipped" >&2; }; }

validate: install
	$(BIN)/alignscope validate

site: install
	$(BIN)/alignscope site

serve: install
	$(BIN)/alignscope serve

# Runs only the cells whose fingerprint changed (ONLY='glob' narrows it, DEVICE=cuda moves it).
ONLY ?=
DEVICE ?= auto
# JOBS worker processes with cores/JOBS threads each; JOBS=1 runs in one process with per-input progress.
JOBS ?= 2
reproduce: install validate
	$(BIN)/alignscope reproduce --device $(DEVICE) --jobs $(JOBS) $(if $(ONLY),--only '$(ONLY)')
	$(BIN)/alignscope site

train: install
	$(BIN)/alignscope train

bench: install
	$(PY) bench/bench_reproduce.py
	$(PY) bench/bench_world.py
	$(PY) bench/bench_adapter.py
	$(PY) bench/bench_matrix_cost.py
	$(PY) bench/bench_runner.py --experiments default,parameter-frozen,paper-beam --jobs 2
	$(PY) bench/bench_methods.py

PAPERS ?= 10000
bench-site: install
	$(PY) bench/bench_site_nochange.py
	$(PY) bench/bench_site.py --papers $(PAPERS)
