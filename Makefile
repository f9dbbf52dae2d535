# The two commands of the README: `make run` (set up and serve) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup setup-dev lint bench bench-smoke

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
	$(BIN)/gunicorn --config config/gunicorn.conf.py --bind $(HOST):$(PORT)

# The suite spends most of its time waiting on servers, worker processes and browsers, not
# on the CPU: it runs in TEST_WORKERS processes (pytest-xdist), more than there are cores.
# test_browser_tabs and test_browser_facts each run whole in one of them (their xdist_group),
# so that their browser and server start once; test_browser, the longest, is spread out.
# The tests that stop the PostgreSQL server run afterwards, alone, adding to the first
# part's coverage data if PYTEST_ARGS asks for coverage. (Exit status 5: the arguments
# selected no test of that part.)
TEST_WORKERS ?= 3
# pytest keeps the test modules it rewrites in __pycache__; without it each of the suite's
# processes rewrites them all again (seconds of CPU each).
test: export PYTHONDONTWRITEBYTECODE =
test: setup-dev
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not stops_database" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -m stops_database --cov-append $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Benchmarks: tables on the terminal, the same figures as JSON in bench-results/. Each runs
# on SQLite and on the PostgreSQL server of BENCH_POSTGRES (its own databases, dropped after).
BENCH_POSTGRES ?= postgres://root@127.0.0.1:5432
bench: setup-dev
	mkdir -p bench-results
	$(BIN)/python -m tests.bench.bench_capture --json bench-results/capture-sqlite.json
	DATABASE_URL=$(BENCH_POSTGRES)/runlog_bench $(BIN)/python -m tests.bench.bench_capture --json bench-results/capture-postgresql.json
	BENCH_POSTGRES=$(BENCH_POSTGRES) $(BIN)/python -m tests.bench.bench_streaming --json bench-results/streaming.json
	BENCH_POSTGRES=$(BENCH_POSTGRES) $(BIN)/python -m tests.bench.bench_workers --json bench-results/workers.json
	BENCH_POSTGRES=$(BENCH_POSTGRES) $(BIN)/python -m tests.bench.bench_search --json bench-results/search.json
	$(BIN)/python -m tests.bench.bench_page --json bench-results/page-sqlite.json
	BENCH_POSTGRES=$(BENCH_POSTGRES) $(BIN)/python -m tests.bench.bench_page --database postgresql --json bench-results/page-postgresql.json

# A smoke run of the benchmarks (small sizes, SQLite): seconds, so that CI keeps them working.
# Its databases are its own, so that it may run beside the tests (.ci/run does).
bench-smoke: setup-dev
	mkdir -p bench-results
	DATABASE_URL=sqlite:///$(CURDIR)/bench-results/smoke.sqlite3 $(BIN)/python -m tests.bench.bench_capture --lines 5000 --repeat 1 --prints 5000
	$(BIN)/python -m tests.bench.bench_streaming --quick --databases sqlite
	$(BIN)/python -m tests.bench.bench_workers --quick --databases sqlite
	$(BIN)/python -m tests.bench.bench_search --quick --databases sqlite
	$(BIN)/python -m tests.bench.bench_page --quick
