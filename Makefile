# Two commands for a fresh clone: `make run` serves the app, `make test` passes the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run serve setup-db reset-db test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running needs (`make run`, `make serve`): the app and its dependencies, not the test tools.
$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Everything `make test` needs: the app plus the test extras (pytest, Playwright, ruff, …).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-app

.env:
	@echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')" > .env
	@echo "BILLING_TEST_MODE=true" >> .env
	@echo "Wrote .env with a random SECRET_KEY and BILLING_TEST_MODE=true (see .env.example for every setting)."

## The development database (DATABASE_URL, else instance/starter.db) migrated, with demo users when new.
setup-db: $(VENV)/.installed-app .env
	@new_db=$$(test -f instance/starter.db || echo yes); \
	$(BIN)/flask db upgrade; \
	if [ -n "$$new_db" ]; then $(BIN)/flask seed; fi

## Develop: http://$(HOST):$(PORT) with the reloader and the debugger (BASE_URL follows the port unless set).
run: setup-db
	$(BIN)/flask run --debug --host $(HOST) --port $(PORT)

## The same, as a plain server: no reloader, no debugger (what a demo or a browser test wants).
serve: setup-db
	$(BIN)/flask run --host $(HOST) --port $(PORT)

## Start again: delete the SQLite development database, then migrate and seed it afresh (not DATABASE_URL's).
reset-db: $(VENV)/.installed-app .env
	rm -f instance/starter.db instance/starter.db-wal instance/starter.db-shm
	$(MAKE) --no-print-directory setup-db

## The whole suite: SQLite always, PostgreSQL too when TEST_DATABASE_URL is set.
test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Benchmarks print figures and write bench/RESULTS.md (PostgreSQL: TEST_DATABASE_URL or BENCH_DATABASE_URL).
bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) instance/starter.db instance/starter.db-wal instance/starter.db-shm .pytest_cache .ruff_cache
