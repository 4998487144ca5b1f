# Two commands matter: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB := sqlite:///.gotstate/demo.db
DEMO_KEYS := .gotstate/demo-keys.json

.PHONY: install services demo test lint types pytest bench clean lock lock-upgrade test-lowest

PLUGIN := examples/plugin_backend
EXTENSIONS := examples/extensions

# The test environment is installed from uv.lock, so every machine (CI included)
# tests the same versions of everything. uv itself is pinned here and bootstrapped
# with pip into a venv of its own: `uv sync` makes .venv hold exactly what the lock
# lists, so uv must not live in it.
UV_VERSION := 0.13.9
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
UV_STAMP := $(UV_VENV)/.uv-$(UV_VERSION)
# never fetch a Python build: use the interpreter given as PYTHON
export UV_PYTHON_DOWNLOADS := never
EXTRAS := --extra test --extra dev --extra postgres --extra s3 --extra ui
# the example third-party backend, discovered through its entry point (group `plugin`
# in pyproject.toml installs examples/plugin_backend editable), and the example
# extensions, registered by their entry-point names (group `examples`)
GROUPS := --group plugin --group examples

$(UV_STAMP):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'
	touch $(UV_STAMP)

# --locked: a pyproject.toml whose requirements the lock does not satisfy is an
# error ("run `make lock`"), never a silent re-resolution.
$(STAMP): pyproject.toml uv.lock $(PLUGIN)/pyproject.toml $(EXTENSIONS)/pyproject.toml $(UV_STAMP)
	$(UV) sync --locked --python $(PYTHON) $(EXTRAS) $(GROUPS)
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
	@echo "--- look at it in a browser: the local, read-only inspector (Ctrl-C stops it) ---"
	@echo "$(BIN)/gotstate-persist ui $(DEMO_DB) --keys $(DEMO_KEYS) --open"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy --strict gotstate_persist
	$(BIN)/mypy --strict $(PLUGIN)/src
	$(BIN)/mypy --strict $(EXTENSIONS)/src

pytest: $(STAMP)
	$(BIN)/pytest tests $(PLUGIN)/tests $(EXTENSIONS)/tests

# Debian's PostgreSQL server (the tests start their own instance; S3 is moto, a pip package)
# and headless Chromium with its driver (the inspector's browser tests)
services:
	bash scripts/test-services.sh

test: services lint types pytest

# Every benchmark prints its own figures and appends them to BENCH_RESULTS (one JSON
# line each, benchmarks/_report.py); the last step prints one table of all of them,
# the machine, and how each is measured (the README's "Performance" section).
BENCH_RESULTS ?= .gotstate/bench-results.jsonl
bench: export BENCH_RESULTS := $(abspath $(BENCH_RESULTS))

bench: $(STAMP)
	rm -f $(BENCH_RESULTS)
	$(PY) benchmarks/bench_snapshot.py
	$(PY) benchmarks/bench_e2e.py
	$(PY) benchmarks/bench_backends.py
	$(PY) benchmarks/bench_quota.py
	$(PY) benchmarks/bench_migrate.py
	$(PY) benchmarks/bench_extensions.py
	$(PY) benchmarks/bench_config.py
	$(PY) benchmarks/bench_runtime.py
	$(PY) benchmarks/bench_undo.py
	$(PY) benchmarks/bench_async.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_ui.py
	$(PY) benchmarks/report_table.py $(BENCH_RESULTS)

# Re-resolve uv.lock after a change to the requirements in pyproject.toml, keeping
# every other pinned version; `make lock-upgrade` moves everything to the newest
# versions allowed. Both only write uv.lock: review and commit it, then `make install`.
lock: $(UV_STAMP)
	$(UV) lock --python $(PYTHON)

lock-upgrade: $(UV_STAMP)
	$(UV) lock --upgrade --python $(PYTHON)

# The suite against the lowest versions that pyproject.toml allows for every direct
# dependency (newest for the indirect ones), in a venv of its own, so that the declared
# floors stay honest: scripts/lowest_constraints.py pins each floor exactly, so a floor
# that cannot be installed or fails the suite has to be raised. Not part of `make test`
# (it resolves and installs a second environment); run it after changing a floor.
# LOWEST_TESTS narrows a rerun: `make test-lowest LOWEST_TESTS="-x tests/test_codec.py"`.
LOWEST := .venv-lowest
LOWEST_EXTRAS := test,postgres,s3,otel,ui
LOWEST_TESTS ?= tests $(PLUGIN)/tests $(EXTENSIONS)/tests
test-lowest: $(UV_STAMP) services
	$(UV) venv --quiet --clear --python $(PYTHON) $(LOWEST)
	$(PYTHON) scripts/lowest_constraints.py pyproject.toml $(LOWEST_EXTRAS) > $(LOWEST)/floors.txt
	$(UV) pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct \
		--constraint $(LOWEST)/floors.txt -e '.[$(LOWEST_EXTRAS)]' -e $(PLUGIN) \
		-e $(EXTENSIONS)
	$(LOWEST)/bin/python -m pytest $(LOWEST_TESTS)

clean:
	rm -rf .gotstate .mypy_cache .ruff_cache .pytest_cache .hypothesis $(LOWEST)
