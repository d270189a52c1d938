# The README's two commands are `make run` and `make test`; each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages: Redis 7 (the cluster), Prometheus + promtool, Alertmanager (+ amtool) and
# redis_exporter (the monitoring), wrk (the benchmark load generator).
SYSTEM_PACKAGES := redis-server redis-tools prometheus prometheus-alertmanager \
	prometheus-redis-exporter wrk
# The tests also lint shell scripts, and drive the reports page in chromium (Playwright).
TEST_PACKAGES := $(SYSTEM_PACKAGES) shellcheck chromium

.PHONY: help venv system-deps install install-dev run test test-fast lint bench bench-quick bench-capacity clean

help:
	@echo "make run    - install and run the whole system natively (foreground, Ctrl-C stops)"
	@echo "make test   - install and run the test suite against a real Redis Cluster"
	@echo "make test-fast - the same without the slow and chaos tests (the inner loop)"
	@echo "make bench  - run the full benchmark harness (minutes); bench-quick for seconds"
	@echo "make lint   - ruff, mypy (strict on src/; tests, bench too) and the layers (lint-imports)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "watchlog needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

system-deps:
	@bash scripts/system-deps.sh $(SYSTEM_PACKAGES)

install: venv system-deps
	$(BIN)/pip install -q -e .

install-dev: venv $(BIN)/checkov
	@bash scripts/system-deps.sh $(TEST_PACKAGES)
	$(BIN)/pip install -q -e '.[dev]'

# checkov (the Kubernetes manifests' policy scanner, tests/deploy/test_kubernetes.py) lives in a
# venv of its own: its pins (packaging<24) conflict with pytest's; linked into $(BIN).
$(BIN)/checkov: $(BIN)/python
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install -q 'checkov>=3.2,<4'
	ln -sf ../checkov/bin/checkov $(BIN)/checkov

run: install
	$(BIN)/watchlog up

test: install-dev
	@# a missing tool fails the run (tests/helpers.py); no opting out here
	TESTS_ALLOW_MISSING_TOOLS= $(BIN)/python -m pytest

# The inner loop: everything but the slow and chaos tests. `make test` (and CI) runs all.
test-fast: install-dev
	TESTS_ALLOW_MISSING_TOOLS= $(BIN)/python -m pytest -m "not slow and not chaos"

# mypy's files and flags are in pyproject.toml: src/watchlog strict, tests and bench not.
lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install-dev
	$(BIN)/python -m bench --full

bench-quick: install-dev
	$(BIN)/python -m bench --quick

# The capacity figures (docs/capacity.md), with 1, 2 and 3 masters: a few minutes.
bench-capacity: install-dev
	$(BIN)/python -m bench --capacity

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .import_linter_cache
