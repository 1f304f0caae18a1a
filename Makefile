# Tollgate: `make run` starts the gateway, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
WEB_CONCURRENCY ?= 1
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
DEMO_LOG_COUNT ?= 5000
BENCH_FLAGS ?=
# `make run`'s web server, per worker process: at most 2048 connections (idle keep-alives
# included) before it answers 503, keep-alive longer than a load balancer's 60 s idle timeout,
# in-flight requests and streams get 10 s to finish on stop; uvloop and httptools for speed.
UVICORN_FLAGS ?= --limit-concurrency 2048 --timeout-keep-alive 75 --timeout-graceful-shutdown 10 \
	--no-access-log --loop uvloop --http httptools
# `make run` hands records to its worker once a second rather than every 0.1 s: export batches ten
# times bigger, so each batch's fixed SQLite and rollup work is paid by far more records. Records
# are journaled before the response, so a longer interval loses nothing; they reach the log a
# second later at most.
RUN_TELEMETRY_FLUSH_INTERVAL ?= 1
VAR_DIR := $(or $(GATEWAY_VAR_DIR),$(CURDIR)/var)
WEB = $(BIN)/uvicorn gateway_project.asgi:application --host 127.0.0.1 --port $(PORT) --workers $(WEB_CONCURRENCY) \
	$(UVICORN_FLAGS)
WORKER = $(BIN)/celery -A gateway_project worker --loglevel INFO --concurrency 1 -Q export.postgres,export.elasticsearch,celery

.PHONY: install browser prometheus migrate run key superuser test lint format bench clean

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

# Prometheus for the test that runs the documented PromQL queries against the live gateway, from Debian's packages.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null)

migrate: install
	@$(BIN)/python manage.py migrate --noinput --verbosity 0

# The gateway on 127.0.0.1:$(PORT) with a Celery worker. Without DATABASE_URL, REDIS_URL and
# ELASTICSEARCH_URL it runs on embedded defaults: SQLite, a filesystem broker, no Elasticsearch;
# only that embedded database gets demo data, once. GATEWAY_CONFIG_FILE, when set, is applied
# first. Ctrl-C or SIGTERM stops both processes.
run: migrate
	@$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@$(BIN)/python manage.py seed_demo_logs --count $(DEMO_LOG_COUNT) --if-empty --embedded-only
	@$(BIN)/python manage.py gateway_config apply --if-configured
	@rm -rf $(VAR_DIR)/prometheus && mkdir -p $(VAR_DIR)/prometheus
	@PROMETHEUS_MULTIPROC_DIR=$(VAR_DIR)/prometheus \
		TELEMETRY_FLUSH_INTERVAL=$${TELEMETRY_FLUSH_INTERVAL:-$(RUN_TELEMETRY_FLUSH_INTERVAL)} exec $(BIN)/python -m gateway_project.launcher \
		--url http://127.0.0.1:$(PORT) --web "$(WEB)" --worker "$(WORKER)"

# A gateway key for ORG (and pinned to PROJECT when given); both are created when missing.
key: migrate
	@test -n "$(ORG)" || { echo "usage: make key ORG=<org> [PROJECT=<project>]" >&2; exit 2; }
	@$(BIN)/python manage.py issue_key --org "$(ORG)" $(if $(PROJECT),--project "$(PROJECT)")

# A login for the dashboards and admin; asks for the details, or takes DJANGO_SUPERUSER_USERNAME,
# _EMAIL and _PASSWORD from the environment.
superuser: migrate
	@$(BIN)/python manage.py createsuperuser $(if $(DJANGO_SUPERUSER_PASSWORD),--noinput)

test: install browser prometheus
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

# `make bench BENCH_FLAGS=--budget`: the same load with and without a budget and two limits on the key.
# BENCH_FLAGS=--two-deployment-group compares a group of two deployments with the single upstream route.
bench: install
	$(BIN)/python bench/proxy_bench.py $(BENCH_FLAGS)

clean:
	rm -rf var
