# make demo: install, then run the quickstart search on shipped data.
# make test: install, then run every test phase (lint, unit, magic, executors, notebooks, browser).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test environment pins torch's CPU build; torch stays an optional extra of the package.
TORCH := torch==2.13.0
# The JupyterLab extension is built by the install (npm, through hatch-jupyter-builder) when these change.
FRONTEND := $(wildcard package.json package-lock.json tsconfig.json labextension/src/*.ts labextension/style/*)
# The browser tests drive Debian's Chromium through Python Playwright.
CHROMIUM := /usr/bin/chromium

.PHONY: test demo install-test install-demo lint format bench bench-widget clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-test: $(BIN)/python pyproject.toml $(FRONTEND)
	$(BIN)/python -m pip install -q -e '.[test,torch]' $(TORCH)
	touch $@

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml $(FRONTEND)
	$(BIN)/python -m pip install -q -e '.[demo,torch]' $(TORCH)
	touch $@

install-test: $(VENV)/.installed-test
install-demo: $(VENV)/.installed-demo

# Installed only when missing (as root, from the Debian archive).
$(CHROMIUM):
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

test: install-test $(CHROMIUM)
	$(BIN)/python tests/phases.py

demo: install-demo
	HBMAGIC_DIR=$$(mktemp -d) $(BIN)/python notebooks/demo.py

lint: install-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-test
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/asha.py

bench-widget: install-test $(CHROMIUM)
	$(BIN)/python benchmarks/widget.py

clean:
	rm -rf $(VENV) build dist hbmagic/labextension labextension/lib node_modules tests/artifacts
