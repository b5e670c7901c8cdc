# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv with pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install runtime demo test lint browser bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The runtime alone (no extras), installed as the image installs it. The compose test runs the
# services' commands from it, so a dependency that only the dev extras bring fails the tests.
BARE ?= .venv-bare
BARE_STAMP := $(BARE)/.installed

$(BARE_STAMP): pyproject.toml
	rm -rf $(BARE)
	$(PY) -m venv $(BARE)
	$(BARE)/bin/pip install --quiet --upgrade pip
	$(BARE)/bin/pip install --quiet .
	touch $(BARE_STAMP)

runtime: $(BARE_STAMP)

demo: install
	$(BIN)/annoloop up --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The browser tests (tests/browser/) drive Debian's Chromium; apt-get installs it if missing.
browser:
	sh scripts/ensure_chromium.sh

test: lint browser runtime
	ANNOLOOP_TEST_RUNTIME_PYTHON=$(abspath $(BARE))/bin/python $(BIN)/pytest

bench: install
	$(BIN)/python -m worker.bench

clean:
	rm -rf $(VENV) $(BARE) annoloop-data
