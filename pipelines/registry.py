"""The model registry: register challengers, read aliases, roll back, and summarise the champion.

Aliases only (stages are deprecated): ``challenger`` is the latest registered best candidate,
``champion`` is what the service loads. Every decision and its numbers are written on the model
version (description and tags), so the MLflow UI shows why a version is or is not champion.
"""

from __future__ import annotations

import json
import re

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.settings import Settings
from pipelines.tasks import PRIMARY

CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryUnavailable(RuntimeError):
    """The registry did not answer (down, unreachable, failing): unlike "no champion yet", nothing to train
    or promote fixes it, so callers must not read it as a missing model."""


def _not_found(exc: MlflowException) -> bool:
    # A missing model is RESOURCE_DOES_NOT_EXIST; a missing alias on an existing one is INVALID_PARAMETER_VALUE.
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message)


def _unavailable(c: MlflowClient, exc: Exception) -> RegistryUnavailable:
    """One line: MLflow's message repeats the URL and urllib3's whole chain; the OS error says enough."""
    return _unavailable_uri(c.tracking_uri, exc)


def require_reachable(settings: Settings) -> None:
    """RegistryUnavailable within ``registry.probe_timeout_s`` when the MLflow server does not answer (refused,
    unresolvable, or accepting and never answering): one request, no retries, so a command says so in seconds
    instead of after MLflow's retries. Any HTTP answer counts as reachable; a local store is not probed."""
    uri = settings.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/search", params={"max_results": 1},
                  timeout=settings.registry.probe_timeout_s)
    except httpx.TimeoutException as exc:
        raise RegistryUnavailable(f"registry unreachable at {uri}: no answer within "
                                  f"{settings.registry.probe_timeout_s:g} s ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        if _tls_refused(exc):  # it answered; its certificate is MLflow's to check, with MLflow's own TLS settings
            return
        raise _unavailable_uri(uri, exc) from exc


def _tls_refused(exc: BaseException | None) -> bool:
    import ssl

    while exc is not None:
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _unavailable_uri(uri: str, exc: Exception) -> RegistryUnavailable:
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\][^\"')]*", text)
    reason = errno.group(0) if errno else text.splitlines()[0][:160] if text else type(exc).__name__
    return RegistryUnavailable(f"registry unreachable at {uri}: {reason}")


def client(settings: Settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def register_challenger(candidate, task: str, snapshot_id: str, baseline: dict, oracle: dict,
                        settings: Settings, label: str | None = None):
    """Register ``candidate`` with all its tags in one step (a run killed mid-way leaves no version that
    lacks a tag) and alias it ``challenger``; a failure before the alias removes the version."""
    c = client(settings)
    name = settings.model_name(task)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"Image popularity, {task} task. Aliases: champion, challenger.")
    tags = {
        "candidate": candidate.name, "family": candidate.family, "task": task, "snapshot": snapshot_id,
        "run_id": candidate.run_id, "metrics": json.dumps(candidate.metrics),
        "selection": json.dumps({"split": "validation", "metric": PRIMARY[task],
                                 "value": candidate.validation.get(PRIMARY[task])}),
        "baseline": json.dumps(baseline), "oracle": json.dumps(oracle), "label": label or "",
        "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
        # the gate rebuilds the same test split from these
        "split": str(candidate.params.get("split", "group")),
        "require_faces": str(bool(candidate.params.get("require_faces", False))),
    }
    version = mlflow.register_model(candidate.model_uri, name, tags=tags)
    try:
        c.set_registered_model_alias(name, CHALLENGER, version.version)
    except BaseException:
        c.delete_model_version(name, version.version)
        raise
    return c.get_model_version(name, version.version)


def alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    """The version behind ``alias``; None when the model or alias does not exist, RegistryUnavailable when
    the registry cannot say."""
    try:
        return c.get_model_version_by_alias(name, alias).version
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise _unavailable(c, exc) from exc


def rollback(task: str, settings: Settings) -> str:
    """Give ``champion`` back to the version it replaced; returns that version."""
    c = client(settings)
    name = settings.model_name(task)
    current = alias_version(c, name, CHAMPION)
    if current is None:
        raise LookupError(f"{name} has no champion to roll back")
    previous = c.get_model_version(name, current).tags.get("previous_champion")
    if not previous:
        raise LookupError(f"{name} version {current} replaced no earlier champion; nothing to roll back to")
    c.set_registered_model_alias(name, CHAMPION, previous)
    c.set_model_version_tag(name, current, "gate", "rolled_back")
    c.update_model_version(name, current, description=f"rolled back: champion returned to version {previous}")
    return previous


def champion_summary(task: str, settings: Settings) -> dict:
    """The ``model`` JSON summary: name, version, alias, family, how it was chosen, test metrics and baseline."""
    c = client(settings)
    name = settings.model_name(task)
    version = alias_version(c, name, CHAMPION)
    if version is None:
        raise LookupError(f"{name} has no champion yet; run `popularity run` or `popularity promote`")
    return _summary(c, name, version, CHAMPION)


def _summary(c: MlflowClient, name: str, version: str, alias: str | None = None) -> dict:
    """A version's summary; ``alias`` is how it was found (else the champion alias if it holds it, or its first)."""
    try:
        model_version = c.get_model_version(name, version)
    except MlflowException as exc:
        if _not_found(exc):
            raise LookupError(f"{name} has no version {version}") from exc
        raise _unavailable(c, exc) from exc
    tags, aliases = model_version.tags, list(model_version.aliases or [])
    alias = alias or (CHAMPION if CHAMPION in aliases else next(iter(aliases), None))
    return {
        "name": name, "version": version, "alias": alias,
        "family": tags.get("family"),
        "candidate": tags.get("candidate"), "snapshot": tags.get("snapshot"), "run_id": tags.get("run_id"), "trained_at": tags.get("trained_at"),
        "metrics": json.loads(tags.get("metrics", "{}")), "selection": json.loads(tags.get("selection", "null")),
        "baseline": json.loads(tags.get("baseline", "{}")),
        "oracle": json.loads(tags.get("oracle", "{}")), "gate_reason": tags.get("gate_reason"),
        "label": tags.get("label") or None,
    }


def load_python_model(uri: str):
    """The python model behind a logged pyfunc (``models:/…``, ``runs:/…`` or a local path): the object
    that scores decoded images (``predict_images``) and profiles them for drift (``profile_images``)."""
    return mlflow.pyfunc.load_model(uri).unwrap_python_model()


def load_model(task: str, settings: Settings, version: str | None = None) -> tuple[object, dict]:
    """``(python model, summary)`` of ``task``'s champion, or of its registered ``version``: the one way
    the service, in-process ``popularity predict``, the gate and the benches load a registered model.
    The version is resolved first and loaded by number, so an alias that moves meanwhile cannot pair one
    version's summary with another's model. LookupError when there is no champion (or no such version)
    yet; RegistryUnavailable when the registry cannot say."""
    if version is None:
        summary = champion_summary(task, settings)
    else:
        summary = _summary(client(settings), settings.model_name(task), str(version))
    return load_python_model(f"models:/{summary['name']}/{summary['version']}"), summary
