# facerecon: `make run` serves the shipped weights, `make test` runs the suite.
# Both install what they need first (torch is pinned to the local CPU wheel).
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: setup run test bench lint

setup:
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'

run: setup
	facerecon serve

test: setup
	$(PYTHON) -m pytest

bench: setup
	$(PYTHON) -m bench.run_all

lint:
	$(PYTHON) -m ruff check service tests bench training clients
	$(PYTHON) -m ruff format --check service tests bench training clients
