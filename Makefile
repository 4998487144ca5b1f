# Two commands matter: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB := sqlite:///.gotstate/demo.db
DEMO_KEYS := .gotstate/demo-keys.json

.PHONY: install services demo test lint types pytest bench clean

PLUGIN := examples/plugin_backend

$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,postgres,s3]'
	# the example third-party backend, discovered through its entry point
	$(PY) -m pip install --quiet -e $(PLUGIN)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf .gotstate && mkdir -p .gotstate
	$(BIN)/gotstate-persist keys generate > $(DEMO_KEYS)
	$(PY) examples/demo.py save --url $(DEMO_DB) --keys $(DEMO_KEYS)
	@echo "--- process restart: a new Python process restores and continues ---"
	$(PY) examples/demo.py restore --url $(DEMO_DB) --keys $(DEMO_KEYS)
	@echo "--- what is stored, through the CLI ---"
	$(BIN)/gotstate-persist ls $(DEMO_DB)
	$(BIN)/gotstate-persist show $(DEMO_DB) order-42 --namespace orders --keys $(DEMO_KEYS)
	$(BIN)/gotstate-persist verify $(DEMO_DB) --keys $(DEMO_KEYS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy --strict gotstate_persist
	$(BIN)/mypy --strict $(PLUGIN)/src

pytest: $(STAMP)
	$(BIN)/pytest tests $(PLUGIN)/tests

# Debian's PostgreSQL server (the tests start their own instance; S3 is moto, a pip package)
services:
	bash scripts/test-services.sh

test: services lint types pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_snapshot.py
	$(PY) benchmarks/bench_backends.py
	$(PY) benchmarks/bench_quota.py
	$(PY) benchmarks/bench_migrate.py

clean:
	rm -rf .gotstate .mypy_cache .ruff_cache .pytest_cache .hypothesis
