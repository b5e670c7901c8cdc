# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv with pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every version pip installs here, in CI and in the image (`make lock` refreshes it).
LOCK := requirements.lock

.PHONY: install runtime lock demo test lint browser bench clean

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The runtime alone (no extras), installed as the image installs it. The compose test runs the
# services' commands from it, so a dependency that only the dev extras bring fails the tests.
BARE ?= .venv-bare
BARE_STAMP := $(BARE)/.installed

$(BARE_STAMP): pyproject.toml $(LOCK) $(STAMP)
	rm -rf $(BARE)
	$(PY) -m venv $(BARE)
	$(BARE)/bin/pip install --quiet --upgrade pip
	# torch and what it needs are hard links to .venv's files, not a second 5.5 GB copy.
	$(BIN)/python scripts/link_packages.py $(BARE) torch torchvision
	$(BARE)/bin/pip install --quiet --constraint $(LOCK) .
	touch $(BARE_STAMP)

runtime: $(BARE_STAMP)

# Re-resolves requirements.lock from pyproject.toml (runtime and every extra) with pip-tools,
# keeping the pins that still fit; `make lock UPGRADE=1` moves every pin to the newest allowed.
# torch stays on the release the Dockerfile and the machines' wheels are built for. The dev
# extra names the project itself, which pip-compile writes as an absolute file URL: dropped.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
LOCK_VENV := build/lock-venv
lock:
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet 'pip-tools==7.7.0'
	CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_VENV)/bin/pip-compile --quiet --extra dev \
	  --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  --no-emit-trusted-host $(if $(UPGRADE),--upgrade) $(addprefix -P ,$(TORCH_PINS)) \
	  --output-file $(LOCK) pyproject.toml
	awk '/^annoloop @ /{skip=1; next} skip && /^ /{next} {skip=0; print}' $(LOCK) > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

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
	ANNOLOOP_TEST_RUNTIME_PYTHON=$(abspath $(BARE))/bin/python $(BIN)/pytest --durations=25

# The inner loop, a few minutes: no slow tests, no browser, SQLite only (tests marked redis
# still want Redis). `make test`, which CI runs, runs everything.
.PHONY: test-fast
test-fast: install
	ANNOLOOP_TEST_BACKENDS=sqlite $(BIN)/pytest -m 'not slow' --ignore=tests/browser

bench: install
	$(BIN)/python -m worker.bench

clean:
	rm -rf $(VENV) $(BARE) annoloop-data
