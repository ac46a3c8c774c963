# Relay: `make run` starts everything on embedded defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
# Cached bytecode: worker and web processes start far faster (some environments disable it).
unexport PYTHONDONTWRITEBYTECODE
BIN := $(VENV)/bin
# The web port of `make run` (honcho gives the first process this port).
PORT ?= 8000

.PHONY: run test venv migrate seed lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## Set up, migrate, seed the demo brand and run web + worker + beat (Ctrl-C stops all).
run: venv
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  Relay is starting on http://127.0.0.1:$(PORT)/  (log in: admin / relay-demo)"
	@echo "  API docs: http://127.0.0.1:$(PORT)/api/v1/docs/   Ctrl-C stops everything."
	@echo ""
	@# Links point at this port unless PUBLIC_BASE_URL is set (environment or .env). One pump
	@# per send slot, in every process that kicks pumps (Procfile.dev's send worker: -c 3).
	if [ -z "$${PUBLIC_BASE_URL:-}" ] && ! grep -qs '^PUBLIC_BASE_URL=' .env; then \
	  export PUBLIC_BASE_URL=http://127.0.0.1:$(PORT); fi; \
	RELAY_SEND_PUMPS=$${RELAY_SEND_PUMPS:-3} PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/honcho -f Procfile.dev start --port $(PORT)

## Set up and run the whole suite (SQLite; PostgreSQL + Redis + real workers when reachable).
test:
	bash scripts/test

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	bash bench/run

clean:
	rm -rf $(VENV) var
