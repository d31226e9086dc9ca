"""MLflow set-up: the tracking URI and experiments whose artifacts live under the home."""

from __future__ import annotations

import mlflow

from pipelines.settings import Settings


def experiment(settings: Settings, name: str) -> str:
    """Get or create ``name``, storing its artifacts under the home when MLflow runs embedded."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if settings.tracking_uri.startswith("sqlite:"):
        location = (settings.artifacts_dir / name).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
        return mlflow.get_experiment_by_name(name).experiment_id
