# Portside's everyday commands. `make dev` tries it out; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_ENV = eval "$$(scripts/test-env.sh env)"

.PHONY: install dev demo test lint format bench clean

$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

## One machine, everything: SQLite + local Redis, a Docker engine and a registry (the
## configured ones, else started here as root), web on http://127.0.0.1:8000
## (PORTSIDE_DEV_BIND), data in .portside/ of this checkout (PORTSIDE_DATA_DIR)
dev: $(STAMP)
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@eval "$$(scripts/test-env.sh dev)" && exec $(BIN)/portside dev

## With `make dev` running (another terminal): a sample app as a local git repository,
## registered as a git-URL service, deployed, and its URL once it answers
demo: $(STAMP)
	@$(BIN)/python -m controlplane.demo

## The whole suite against real PostgreSQL, Redis, Docker engine and registry
test: $(STAMP)
	scripts/test-env.sh up
	$(TEST_ENV) && $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy controlplane tasks buildworker hostagent contracts
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	scripts/test-env.sh up
	$(TEST_ENV) && $(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
