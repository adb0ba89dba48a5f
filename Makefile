# facerecon: `make run` serves the shipped weights, `make test` runs the suite.
# Both install what they need first (torch is pinned to the local CPU wheel).
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: setup tools run test bench lint demo

# pip runs only when pyproject.toml or this Makefile changed since the last install with
# this $(PYTHON) (a stamp per interpreter name): not 20-27 s of pip on every `make run`.
SETUP_STAMP := .setup-stamp-$(notdir $(PYTHON))
setup: $(SETUP_STAMP)
$(SETUP_STAMP): pyproject.toml Makefile
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	@touch $@

# System tools that parts of the suite use, installed when missing: promtool (alert rules),
# Chromium + chromedriver (web demo end to end), buf, the web bundle's packages and the
# Khronos glTF validator (npm).
# A test whose tool cannot be had skips and says why.
APT_TOOLS := $(if $(shell command -v promtool),,prometheus) \
	$(if $(shell command -v chromium),,chromium) $(if $(shell command -v chromedriver),,chromium-driver)
tools:
	@if [ -n "$(strip $(APT_TOOLS))" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends $(APT_TOOLS) >/dev/null; \
		else echo "not installed (needs root and apt-get): $(APT_TOOLS)"; fi; fi
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix proto --no-audit --no-fund --silent && \
		npm ci --prefix clients/web --ignore-scripts --no-audit --no-fund --silent && \
		npm ci --prefix tests/gltf --ignore-scripts --no-audit --no-fund --silent; \
	else echo "npm not found: buf lint, the web bundle and glTF validator checks will skip"; fi

# The gRPC service on the shipped weights and the shipped face detector (YuNet), so whole
# photos work; DETECTOR=another .onnx, or DETECTOR=none to take each photo as a face crop.
# A line on stdout says when the model is loaded and the service answers.
DETECTOR ?=
run: setup
	@($(PYTHON) -m facerecon_client.cli wait localhost:50051 --ready-timeout 900 \
		--while-pid $$$$ >/dev/null 2>&1 && echo "make run: facerecon is serving on" \
		"localhost:50051 (try: facerecon-client info localhost:50051)") & \
	exec facerecon serve $(if $(DETECTOR),--detector $(DETECTOR))

# The web demo (clients/web/README.md): its own gRPC service (on a free port) and the page at
# http://127.0.0.1:8000; Ctrl-C or SIGTERM stops both. WEIGHTS=checkpoint (default
# weights/facerecon.pt); DETECTOR=face detector .onnx or none (as for `make run`).
demo: setup
	$(PYTHON) -m facerecon_web.demo $(if $(WEIGHTS),--weights $(WEIGHTS)) \
		$(if $(DETECTOR),--detector $(DETECTOR))

test: setup tools
	$(PYTHON) -m pytest

bench: setup
	$(PYTHON) -m bench.run_all

lint:
	$(PYTHON) -m ruff check service tests bench training clients
	$(PYTHON) -m ruff format --check service tests bench training clients
