# Two commands for a fresh clone: `make run` serves the app, `make test` passes the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

.env:
	@echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')" > .env
	@echo "BILLING_TEST_MODE=true" >> .env
	@echo "Wrote .env with a random SECRET_KEY and BILLING_TEST_MODE=true (see .env.example for every setting)."

## Serve the app on http://127.0.0.1:$(PORT) against a SQLite file, with demo users on a new database.
run: $(VENV)/.installed .env
	@new_db=$$(test -f instance/starter.db || echo yes); \
	$(BIN)/flask db upgrade; \
	if [ -n "$$new_db" ]; then $(BIN)/flask seed; fi
	$(BIN)/flask run --host 127.0.0.1 --port $(PORT)

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
	rm -rf $(VENV) instance/starter.db .pytest_cache .ruff_cache
