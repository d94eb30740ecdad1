# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export CHARGEBACK_HOME ?= $(CURDIR)/var

.PHONY: venv demo test test-system-deps bench dashboard dagster clean

$(BIN)/chargeback: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --python $(BIN)/python --compile-bytecode requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps --compile-bytecode -e .
	touch $@

venv: $(BIN)/chargeback

demo: venv
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/chargeback demo

# Tests need a real Prometheus, Alertmanager and headless Chromium: Debian's packages.
test-system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v chromium >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager chromium >/dev/null; \
	  else \
	    echo "tests need Debian's prometheus, prometheus-alertmanager and chromium packages: sudo apt-get install prometheus prometheus-alertmanager chromium" >&2; exit 1; \
	  fi; \
	fi

test: venv test-system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: venv
	$(BIN)/python -m bench

dashboard: venv
	$(BIN)/chargeback dashboard

# The Dagster UI (asset graph, checks, schedules, runs) on http://127.0.0.1:3000
dagster: venv
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) var
