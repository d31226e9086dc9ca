"""The component tier's shared fixture: a tiny demo snapshot with an MLflow parent run, one per module."""

from __future__ import annotations

import os

import mlflow
import pytest

from tests.component.tiny import tiny_data


@pytest.fixture(scope="module")
def binary(tmp_path_factory, request):
    return tiny_data(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "home")


@pytest.fixture
def tracking(binary):
    """MLflow's tracking URI is process-global: point it back at this module's store before each test."""
    mlflow.set_tracking_uri(binary[0].settings.tracking_uri)


@pytest.fixture(scope="module", autouse=True)
def _shared_prefect(prefect_api):
    """This tier's commands and flows report to the session's Prefect server (``_environment`` undoes it)."""
    os.environ["PREFECT_API_URL"] = prefect_api
