"""The container tier (`make test-containers`, marker ``containers``): images built and a compose stack
run on this machine's Docker daemon. `make test` leaves it out: it runs only when ``-m containers``
selects it, because it builds images for minutes and needs root to start a daemon."""

from __future__ import annotations

import pytest

MARKER = "containers"


def pytest_configure(config):
    config.addinivalue_line("markers",
                            f"{MARKER}: builds images and runs them on a Docker daemon (make test-containers)")


def pytest_collection_modifyitems(config, items):
    if MARKER in (config.getoption("markexpr") or ""):
        return
    chosen = [item for item in items if item.get_closest_marker(MARKER) is None]
    if len(chosen) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker(MARKER)])
        items[:] = chosen
