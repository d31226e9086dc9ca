"""Shared fixtures: an isolated home per test and real photographs to feed the stack."""

from __future__ import annotations

import io
import os
import threading

# pytest-xdist's workers (and the servers and commands they start) already share the cores: a thread per
# process keeps OpenMP and BLAS pools from spinning against each other. Set before numpy loads its BLAS.
if "PYTEST_XDIST_WORKER" in os.environ:
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

import numpy as np
import pytest
from PIL import Image

from bench.champion import STABILITY_RELAXED, train_champion
from pipelines.settings import Settings
from tests import xdist_groups
from tests.helpers import LoopbackServer, photo

# `make test` spreads the suite over pytest-xdist workers a group at a time (``--dist loadgroup``): a module
# is one group (its module-scoped fixtures are built once), and every test on the session's champion is one
# more (it is trained once, on one worker). The longest groups, measured on two cores, start first so that
# no worker is left with one of them at the end.
CHAMPION_GROUP = "champion"
LONGEST_FIRST = ("test_production", "test_decay_retrain", CHAMPION_GROUP, "test_end_to_end", "test_faults",
                 "test_drift_retrain", "test_nowcast_service", "test_ddp", "test_schedules", "test_models",
                 "test_registry")


def group(item: pytest.Item) -> str:
    """The test's group: ``champion`` for every test on the session's champion, else its module."""
    return CHAMPION_GROUP if "champion_home" in item.fixturenames else item.module.__name__.rsplit(".", 1)[-1]


def pytest_configure(config):
    xdist_groups.register(config, group)  # each group runs on one worker (see tests/xdist_groups.py)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group(item), len(rank)))


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One Prefect server for the component and integration tiers, as `popularity prefect up` gives a
    user: their commands and flows report to it instead of each starting a temporary server (10–30 s
    apiece). Tests of the temporary server's path (a fresh clone's `popularity run`, usage errors)
    unset ``PREFECT_API_URL`` themselves; the unit tier never starts it."""
    from ops.processes import free_port, prefect_server

    home = tmp_path_factory.mktemp("prefect")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server, url = prefect_server(free_port(), home / "server.log", env)
    yield url
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _graph_cache(tmp_path_factory):
    """One cache of exported graphs (``POPULARITY_CACHE_DIR``) for the run, shared by the xdist workers and
    every command and server they start, as a machine's is; the user's own cache is left alone."""
    base = tmp_path_factory.getbasetemp()
    os.environ["POPULARITY_CACHE_DIR"] = str((base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "cache")


@pytest.fixture(scope="module", autouse=True)
def _environment():
    """Each test module starts from the environment the session started with. Libraries write
    ``os.environ`` in process (``mlflow.set_tracking_uri`` exports ``MLFLOW_TRACKING_URI`` for
    subprocesses), and a leaked value would point a later module's servers and commands at this
    module's stores."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings whose home (MLflow store, snapshots, logs) lives in the test's temporary folder."""
    return Settings(home=tmp_path / "home", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")


@pytest.fixture
def http_server():
    photo(0)  # load the photographs before the first request's timeout starts
    server = LoopbackServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def fast_settings(settings):
    """The test home, private addresses allowed (the server is loopback) and short waits."""
    settings.download = settings.download.model_copy(update={
        "allow_private": True, "timeout_s": 0.5, "retries": 2, "backoff_s": 0.02, "max_backoff_s": 0.1,
        "per_host_per_second": 0.0, "deadline_s": 5.0,
    })
    return settings


@pytest.fixture(scope="session")
def photographs() -> dict[str, np.ndarray]:
    """Real RGB photographs shipped with scikit-image."""
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}


def encode(array: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def champion_home(tmp_path_factory, prefect_api):
    """A home with a registered champion (demo data, quick stats-gb), built once per session by the flows
    in one child process (the commands have their own tests).

    The gate's flip/JPEG stability tolerances are relaxed: 120 demo images are too few for them, and
    the serving tests need a champion, not a good one.
    """
    home = tmp_path_factory.mktemp("champion") / "home"
    train_champion(home, "demo:120", {"PREFECT_API_URL": prefect_api, **STABILITY_RELAXED})
    return home


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database on 127.0.0.1:5432 as a SQLAlchemy URL, dropped afterwards."""
    from tests import postgres

    if not postgres.postgres_available():
        pytest.skip(postgres.SKIP_REASON)
    name = postgres.create_database("popularity_test")
    yield postgres.url(name)
    from monitoring.request_store import engine

    engine.cache_clear()  # close pooled connections before the database goes
    postgres.drop_database(name)
