# The two commands of the README: `make run` (set up and serve) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup setup-dev lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# A .env with a fresh secret key, once; edit it to change settings.
.env:
	sed "s|^SECRET_KEY=.*|SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')|" .env.example > .env

setup: $(BIN)/python .env
	$(BIN)/pip install --quiet -r requirements/base.txt
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	$(BIN)/python manage.py ensureadmin

setup-dev: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt

run: setup
	@echo "Runlog: http://$(HOST):$(PORT)/admin/"
	$(BIN)/gunicorn config.wsgi --config config/gunicorn.conf.py --bind $(HOST):$(PORT)

test: setup-dev
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup-dev
	$(BIN)/python -m tests.bench.bench_capture
