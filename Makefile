# Tollgate: `make run` starts the gateway, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
WEB_CONCURRENCY ?= 1
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
DEMO_LOG_COUNT ?= 5000

.PHONY: install browser run worker web test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# Headless Chromium for the dashboard browser tests, from Debian's packages.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The gateway on 127.0.0.1:$(PORT) with a Celery worker. Without DATABASE_URL, REDIS_URL and
# ELASTICSEARCH_URL it runs on embedded defaults: SQLite, a filesystem broker, no Elasticsearch.
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py seed_demo_logs --count $(DEMO_LOG_COUNT) --if-empty
	@rm -rf var/prometheus && mkdir -p var/prometheus
	@trap 'kill 0' INT TERM EXIT; export PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/prometheus; \
	$(BIN)/celery -A gateway_project worker --loglevel INFO --concurrency 1 -Q export.postgres,export.elasticsearch,celery & \
	$(BIN)/uvicorn gateway_project.asgi:application --host 127.0.0.1 --port $(PORT) --workers $(WEB_CONCURRENCY) \
		--no-access-log --loop uvloop --http httptools

test: install browser
	$(BIN)/ruff check .
	# The embedded mode's SQLite write path first; the whole suite (on Postgres, where it is skipped) last.
	env -u DATABASE_URL -u REDIS_URL GATEWAY_VAR_DIR=$$(mktemp -d) $(BIN)/pytest tests/telemetry/test_exporters.py -k sqlite
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/proxy_bench.py

clean:
	rm -rf var
