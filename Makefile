# buurtalert: `make run` runs the whole system, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install lint unit integration bench soak fault clean browser promtool

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "buurtalert needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/buurtalert up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Browser tests drive Debian's Chromium; as root this installs it once (apt), else it says how.
browser:
	@bash scripts/ensure-browser.sh

# The deployment tests check deploy/prometheus/ with promtool; as root this installs it once.
promtool:
	@bash scripts/ensure-promtool.sh

test: lint browser promtool
	$(BIN)/python -m pytest

unit: $(STAMP) promtool
	$(BIN)/python -m pytest -m unit

integration: $(STAMP) browser
	$(BIN)/python -m pytest -m integration

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -o addopts=''

# 10,000 alerts while router, notifier, nats-server and redis-server are killed or restarted and
# providers answer 429/5xx; a few minutes. Figures in test-artifacts/fault-suite.json.
fault: $(STAMP)
	$(BIN)/python -m pytest tests/fault -m fault -o addopts='-ra' -s

bench: $(STAMP)
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_fanout.py
	$(BIN)/python bench/bench_geo.py
	$(BIN)/python bench/bench_router_memory.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
