# facerecon: `make run` serves the shipped weights, `make test` runs the suite.
# Both install what they need first (torch is pinned to the local CPU wheel).
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: setup run test bench lint demo

setup:
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'

run: setup
	facerecon serve

# The web demo (clients/web/README.md): the gRPC service and the page at http://127.0.0.1:8000;
# Ctrl-C stops both. WEIGHTS=checkpoint (default weights/facerecon.pt); DETECTOR=face detector
# .onnx (default: YuNet from ../shared when present; without one photos must be face crops).
DETECTOR ?= $(wildcard ../shared/models/yunet/yunet_s_dynamic.onnx)
demo: setup
	$(PYTHON) -m facerecon_web.demo $(if $(WEIGHTS),--weights $(WEIGHTS)) \
		$(if $(DETECTOR),--detector $(DETECTOR))

test: setup
	$(PYTHON) -m pytest

bench: setup
	$(PYTHON) -m bench.run_all

lint:
	$(PYTHON) -m ruff check service tests bench training clients
	$(PYTHON) -m ruff format --check service tests bench training clients
