# ticket-sync: the README names these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration bench soak ha-soak clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	scripts/ensure-servers
	$(BIN)/cdc-worker demo

test: lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit --hypothesis-profile=quick

integration: $(STAMP)
	$(BIN)/pytest tests/integration tests/e2e

soak: $(STAMP)
	scripts/ensure-servers
	$(BIN)/python -m tests.soak --minutes $(or $(MINUTES),30)

# Standby workers and Redis Sentinel failovers under a workload, oracle after every round.
ha-soak: $(STAMP)
	$(BIN)/python -m tests.ha_soak --minutes $(or $(MINUTES),10)

bench: $(STAMP)
	scripts/ensure-servers
	bench/ensure-tools
	$(BIN)/python -m bench.all $(if $(QUICK),--quick)

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^ticket-sync' > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
