# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv with pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint browser bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/annoloop up --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The browser tests (tests/browser/) drive Debian's Chromium; apt-get installs it if missing.
browser:
	sh scripts/ensure_chromium.sh

test: lint browser
	$(BIN)/pytest

bench: install
	$(BIN)/python -m worker.bench

clean:
	rm -rf $(VENV) annoloop-data
