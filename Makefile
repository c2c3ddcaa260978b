# Tiers: `make demo` runs the demo territory; `make test` passes the whole suite.
# Both set up everything they need on a fresh machine (venv, packages, services, Chromium).

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
REUSER_PORT ?= 5001
# The demo's issuer must be the URL it is reached at (RFC 8414 §3.3): it follows PORT.
DEMO_ISSUER ?= http://127.0.0.1:$(PORT)
REUSER_URL ?= http://127.0.0.1:$(REUSER_PORT)
HOLDERS_BASE_PORT ?= 5101
DEMO_HOLDERS ?= $(foreach i,0 1 2 3,http://127.0.0.1:$(shell echo $$(($(HOLDERS_BASE_PORT)+$(i)))))
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/tiers_test
REDIS_URL ?= redis://127.0.0.1:6379/15
TRANSLATIONS := broker/translations

.PHONY: install translations services chromium lint test test-sqlite test-postgres coverage demo bench clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

translations: install
	$(BIN)/pybabel compile --use-fuzzy -d $(TRANSLATIONS) -D messages

services:
	bash scripts/services.sh

chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	  || { echo "could not install chromium: the browser tests cannot run"; exit 1; }; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The embedded default: SQLite, tasks run eagerly in-process (every test but the system tier).
test-sqlite: install translations chromium
	$(BIN)/pytest -m "not system"

# The embedded tier again, measuring coverage (tracing slows it by about a third: not in CI).
coverage: install translations chromium
	$(BIN)/pytest -m "not system" --cov --cov-report=term

# PostgreSQL, Redis and a real Celery worker: the whole suite, system tier included.
test-postgres: install translations services chromium
	TIERS_TEST_DATABASE_URL=$(PG_URL) TIERS_SYSTEM=1 CELERY_BROKER_URL=$(REDIS_URL) \
	  $(BIN)/pytest

test: lint test-sqlite test-postgres

demo: install translations
	$(BIN)/tiers db upgrade
	@# The holders start first: the seed registers the datasets each one describes at
	@# GET /datasets (idempotent). The statistics come once Tiers serves (the distributor
	@# checks the ingestion's token against its JWKS). The holders, the server and the reuser
	@# run in the background and stop with `make demo` (Ctrl-C).
	TIERS_URL=$(DEMO_ISSUER) $(BIN)/python -m examples.holders all --base-port $(HOLDERS_BASE_PORT) & holders=$$!; \
	  trap 'kill $$holders $$reuser $$server 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	  TIERS_ISSUER=$(DEMO_ISSUER) TIERS_DEMO_REUSER_URL=$(REUSER_URL) \
	    TIERS_DEMO_HOLDERS="$(DEMO_HOLDERS)" $(BIN)/tiers demo-seed || exit 1; \
	  TIERS_ISSUER=$(DEMO_ISSUER) $(BIN)/tiers run --host 127.0.0.1 --port $(PORT) & server=$$!; \
	  TIERS_ISSUER=$(DEMO_ISSUER) $(BIN)/tiers demo-statistics \
	    || echo "No demo statistics this time: the observatory's pages start empty."; \
	  echo ""; \
	  echo "Tiers demo territory: $(DEMO_ISSUER)/"; \
	  echo "Demo reuser EcoWatt Conseil (PAR + PKCE + private_key_jwt + DPoP): $(REUSER_URL)/"; \
	  echo "  its API client (client_credentials, access requests): instance/demo-reuser-api.json"; \
	  echo "Demo holders' API clients (to redeem citizens' pairing codes): instance/demo-holder-<organisation>-api.json"; \
	  echo "Demo data holders (electricity, gas, transit, open building sensors): $(DEMO_HOLDERS)"; \
	  echo "Demo sign-ins (password demo-tiers-2026): camille@demo.tiers.local (also on the charter committee), yanis@demo.tiers.local, lea@demo.tiers.local"; \
	  echo "Observatory member (its releases at $(DEMO_ISSUER)/statistics/releases): observatoire@demo.tiers.local"; \
	  echo ""; \
	  TIERS_URL=$(DEMO_ISSUER) $(BIN)/python -m examples.reuser.app --port $(REUSER_PORT) & reuser=$$!; \
	  wait $$server

bench: install services
	$(BIN)/python bench/consent_writes.py
	$(BIN)/python bench/introspection.py
	$(BIN)/python bench/instructions.py
	$(BIN)/python bench/audit_log.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/revocation.py
	$(BIN)/python bench/dp_release.py

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
