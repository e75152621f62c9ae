# Two commands for a fresh machine (Python 3.11, no GPU): `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: install system-packages demo test test-slow bench bench-quick lint clean-demo

install: $(VENV)/.installed

# torch first, pinned: the CPU build. Installed later by a dependency, pip would fetch the multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The Debian packages the tests use (browser, OCR, nginx, dicom3tools): installed when root and apt-get can, else one
# `error:` line naming them, before any test runs.
system-packages:
	@PATH="$$PATH:/usr/sbin" bash tests/support/system_packages.sh

demo: install
	@test -d $(DEMO)/data || $(BIN)/oncofed synth --out $(DEMO)/data --sites 3 --preset demo --seed 0
	$(BIN)/oncofed simulate --data $(DEMO)/data --out $(DEMO)/runs/$$(date +%Y%m%d-%H%M%S) --rounds 8 --preset small --run-config 'local-baseline=true local-epochs=2 spacing-mm=3 patch-size=24'

# Style and the import contract first (seconds), then the tests: unit and integration; `slow` ones are separate.
test: install system-packages
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/ruff check --no-cache .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

test-slow: install system-packages
	$(BIN)/pytest -q -m slow

# Benchmarks: each script prints RATIO lines and appends to bench/RESULTS.md (see bench/README.md).
bench: install
	for script in quality pipeline overhead aggregation scale cli_start; do $(BIN)/python bench/$$script.py || exit 1; done

bench-quick: install
	for script in quality pipeline overhead aggregation scale cli_start; do $(BIN)/python bench/$$script.py --quick || exit 1; done

lint: install
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/ruff check --no-cache .
	$(BIN)/lint-imports

clean-demo:
	rm -rf $(DEMO)
