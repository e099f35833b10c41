# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Where download links and the certificates' CRL distribution point send clients: the address
# `make run` serves on, unless PORTAL_URL is given (environment or `make run PORTAL_URL=...`).
PORTAL_URL ?= http://127.0.0.1:$(PORT)
# make run is development: generated secrets in DATA_DIR, SQLite, tasks in-process.
RUN_ENV := DEBUG=true PORTAL_URL=$(PORTAL_URL)

.PHONY: run test test-postgres lint bench bench-est clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The project itself is installed (editable) for its `onboard` command.
$(VENV)/.runtime-installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(VENV)/.runtime-installed $@

run: $(VENV)/.runtime-installed
	$(RUN_ENV) $(BIN)/python manage.py migrate --no-input
	$(RUN_ENV) $(BIN)/python manage.py init_ca
	@echo "First staff user (in another terminal):"
	@echo "  DEBUG=true $(BIN)/python manage.py createsuperuser"
	@echo "then sign in at http://127.0.0.1:$(PORT)/portal/login/ : the first sign-in sets up the"
	@echo "TOTP authenticator (QR code) and shows one-time backup codes; the admin is at /admin/."
	$(RUN_ENV) $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

# .ci/prepare first: the system tools the suite drives (Mosquitto, Redis, chromium,
# docker-compose...) are installed (as root; otherwise it prints the apt-get line and stops)
# and Redis is started; quick when all is there. The virtualenv comes after it, since a bare
# Debian may lack python3-venv.
test:
	.ci/prepare
	@$(MAKE) -s --no-print-directory $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite on PostgreSQL (installed and started by .ci/prepare --postgres); the run
# creates and drops the database test_<name in the URL>.
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/onboarding
test-postgres:
	.ci/prepare --postgres
	@$(MAKE) -s --no-print-directory $(VENV)/.dev-installed
	DATABASE_URL=$(POSTGRES_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint and type-check with throw-away secrets (mypy's Django plugin imports the settings).
LINT_ENV := SECRET_KEY=lint-only CA_KEY_PASSPHRASE=lint-only DATA_DIR=$(CURDIR)/var/lint
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(LINT_ENV) $(BIN)/mypy .

# Benchmarks print figures against raw limits measured in the same run; results in bench/results/.
# bench_http and bench_bulk serve the portal with gunicorn; bench_http uses wrk when installed
# (apt-get install wrk), else a slower Python load loop. BULK_DEVICES=500 for a quick run.
BULK_DEVICES ?= 10000
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench.bench_registration
	$(BIN)/python -m bench.bench_crl
	$(BIN)/python -m bench.bench_acl
	$(BIN)/python -m bench.bench_dynsec
	$(BIN)/python -m bench.bench_enforcement
	$(BIN)/python -m bench.bench_http
	$(BIN)/python -m bench.bench_bulk --devices $(BULK_DEVICES)

# EST enrolment through nginx (proxy_config) and gunicorn on PostgreSQL (a throw-away database on
# BENCH_DATABASE_URL, default the local server), against the crypto ceiling and CSR registration
# of the same run; about 2 minutes. EST_ENROLMENTS=1000 for a longer run (per round, 3 rounds).
EST_ENROLMENTS ?= 200
bench-est: $(VENV)/.dev-installed
	$(BIN)/python -m bench.bench_est --enrolments $(EST_ENROLMENTS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
