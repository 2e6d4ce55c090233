# The two commands a newcomer needs: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit bench venv clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## run: the service on http://127.0.0.1:8000 (embedded broker, dev mode unless NOTIFIER_* say otherwise)
run: venv
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
