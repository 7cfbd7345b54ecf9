# Two commands do everything on a fresh clone: `make demo` (main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every LSL call in this project runs loopback-only.
export LSLAPICFG := $(CURDIR)/server/rohde/server/lsl_loopback.cfg
DATA_DIR ?= $(HOME)/.cache/rohde/sim-default
QUICK_DIR ?= $(HOME)/.cache/rohde/sim-quick
DEMO_SECONDS ?= 60

.PHONY: install browser test test-fast lint demo personal-demo data-demo model bench reliability clean

install: $(STAMP)

# Re-installs only when the project's requirements change; torch is pinned by constraints.txt. The system
# Chromium (for the dashboard's browser test) is checked on every run, since it lives outside the venv.
$(STAMP): pyproject.toml constraints.txt | browser
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)

# Debian's chromium, driven by Playwright through its executable path (Playwright never downloads a browser here).
# As root (CI on a fresh Debian machine) it is installed with apt when missing; otherwise the command is printed.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "Chromium is missing; the browser test needs it: sudo apt-get install -y chromium" >&2; fi

test: $(STAMP)
	$(BIN)/python -m pytest --durations=25  # the slowest tests, to keep the suite within its time budget

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Main job on the embedded default: simulated amplifier -> server (shipped model) -> live gestures.
demo: $(STAMP)
	$(BIN)/rohde demo --duration $(DEMO_SECONDS)

# A personal model with real parts: unseen subject's simulated amplifier -> rohde record -> rohde train --quick
# -> live switch on a running server -> scored on a fresh session (about 4 minutes on 2 cores).
personal-demo: $(STAMP)
	$(BIN)/rohde demo --personal

# Simulate the quick dataset and draw its plots.
data-demo: $(STAMP)
	$(BIN)/rohde data simulate --out $(QUICK_DIR) --quick
	$(BIN)/rohde data plot $(QUICK_DIR) --out $(QUICK_DIR)/plots

# Re-make the shipped model from the simulated default data set (about 21 minutes on 2 cores).
model: $(STAMP)
	$(BIN)/rohde data simulate --out $(DATA_DIR) --preset default --seed 0
	$(BIN)/rohde train --data $(DATA_DIR) --out models/rohde-default --config configs/default.json

# Benchmarks with real parts (outlets, server, WebSocket clients); writes bench/results.json and bench/RESULTS.md.
# The bench extra adds MNE-LSL, the ingestion section's reference reader.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[train,dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/rohde bench --out bench

# The fault matrix with real parts (outlets, server, clients) and the 30-minute soak; writes docs/reliability.md.
reliability: $(STAMP)
	$(BIN)/rohde reliability --out docs/reliability.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
