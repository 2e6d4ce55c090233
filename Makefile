# The two commands a newcomer needs: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Two stamps: running needs the runtime dependencies only (what `pip install .`
# brings); the tests and lint tools come with the dev extra, installed by `make test`.
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp

.PHONY: run test lint typecheck unit bench venv runtime clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(DEV_STAMP) $(RUN_STAMP)

runtime: $(RUN_STAMP)
venv: $(DEV_STAMP)

## run: the service on http://127.0.0.1:8000 (embedded broker, dev mode unless NOTIFIER_* say otherwise)
run: runtime
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

## test: lint, type-check and the whole suite (starts its own redis-server, gunicorn, nginx, chromium, prometheus)
test: venv
	./scripts/ensure-system-deps
	$(PY) -m ruff check .
	$(PY) -m mypy notifier
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check .

typecheck: venv
	$(PY) -m mypy notifier
	$(VENV)/bin/lint-imports

## unit: the fast tests only (no gunicorn, no browser)
unit: venv
	$(PY) -m pytest -m "not e2e and not chaos and not browser"

## bench: see bench/README.md
bench: venv
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
