# The two commands of the README:
#   make run   set up and start the platform with demo data (embedded profile)
#   make test  set up and run the whole suite against PostgreSQL and Redis

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Parallel test workers (pytest-xdist); the machine has 2 cores.
TEST_WORKERS ?= 2

.PHONY: install run test services migrate lint bench-engine soak

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py demo_data --port $(PORT)
	$(PY) manage.py serve --port $(PORT)

services:
	scripts/ensure-services.sh
	scripts/ensure-chromium.sh

test: install services
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
		$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest -n $(TEST_WORKERS) -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .

# Engine throughput next to pure-Python order books from PyPI (docs/performance.md).
bench-engine: install
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(PY) bench/engine.py

# The fault suite (tests/faults) at full scale: kill storm, double spend, duplicates,
# cancel/amend storms, session faults; prints the table of docs/reliability.md.
# Takes long (tens of minutes on 2 cores). `make test` runs the same tests smaller.
soak: install services
	$(PY) bench/soak.py --scale full
