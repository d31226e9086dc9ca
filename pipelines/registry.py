"""The model registry: register challengers, read aliases, roll back, and summarise the champion.

Aliases only (stages are deprecated): ``challenger`` is the latest registered best candidate,
``champion`` is what the service loads, and after a promotion ``previous`` is the champion it replaced,
watched in shadow until its ``watch_until`` tag (``promotion.rollback_watch_hours``) and restored by
:func:`rollback` when the new champion does worse on live outcomes. Every decision and its numbers are written on the model
version (description and tags), so the MLflow UI shows why a version is or is not champion.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines import review
from pipelines.settings import Settings
from pipelines.tasks import PRIMARY

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
WATCH_UNTIL = "watch_until"  # on the ``previous`` version: until when it is shadowed against its successor
LIVE_VERDICT = "live_verdict"  # on a challenger the monitor judged on its live outcomes: ``refused`` for good


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


def watch_previous(c: MlflowClient, name: str, previous: str | None, hours: float) -> None:
    """After a promotion: alias ``previous`` the champion it replaced and watch it for ``hours`` (its
    ``watch_until`` tag); none (no earlier champion, or ``hours`` 0) ends any watch."""
    if previous is None or hours <= 0:
        end_watch(c, name)
        return
    until = datetime.now(UTC) + timedelta(hours=hours)
    c.set_model_version_tag(name, previous, WATCH_UNTIL, until.isoformat(timespec="seconds"))
    c.set_registered_model_alias(name, PREVIOUS, previous)


def end_watch(c: MlflowClient, name: str) -> None:
    """Remove the ``previous`` alias, if any."""
    try:
        c.delete_registered_model_alias(name, PREVIOUS)
    except MlflowException as exc:
        if not _not_found(exc):
            raise _unavailable(c, exc) from exc


def watched_previous(c: MlflowClient, name: str, champion: str | None = None) -> str | None:
    """The replaced champion still under watch (its ``watch_until`` ahead, not the champion itself), else None."""
    try:
        version = c.get_model_version_by_alias(name, PREVIOUS)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise _unavailable(c, exc) from exc
    until = version.tags.get(WATCH_UNTIL)
    if not until or datetime.fromisoformat(until) <= datetime.now(UTC) or str(version.version) == str(champion):
        return None
    return str(version.version)


def retire_challenger(c: MlflowClient, name: str, version: str, reason: str) -> bool:
    """A challenger refused for good on its live outcomes: the verdict on the version (``live_verdict``
    ``refused``, ``live_verdict_reason``, ``live_verdict_at`` and a paragraph added to its card) and the
    ``challenger`` alias removed while it still names it, so no service scores it in shadow and no monitor
    judges it again. Returns whether the alias was removed."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {LIVE_VERDICT: "refused", "live_verdict_reason": reason[:5000], "live_verdict_at": at}.items():
        c.set_model_version_tag(name, version, key, value)
    removed = drop_challenger(c, name, version)
    card = c.get_model_version(name, version).description or ""
    after = f"The `{CHALLENGER}` alias was removed: it is no longer scored in shadow." if removed else ""
    c.update_model_version(name, version, description=f"{card}\n\n## Refused on live evidence ({at})\n\n{reason}"
                           + (f"\n\n{after}" if after else ""))
    return removed


def drop_challenger(c: MlflowClient, name: str, version: str) -> bool:
    """Remove the ``challenger`` alias while it names ``version``; returns whether it did."""
    if str(alias_version(c, name, CHALLENGER)) != str(version):
        return False
    try:
        c.delete_registered_model_alias(name, CHALLENGER)
    except MlflowException as exc:
        if not _not_found(exc):
            raise _unavailable(c, exc) from exc
    return True


def shadow_target(c: MlflowClient, name: str) -> tuple[str, str] | None:
    """What the service scores in shadow beside the champion, as ``(alias, version)``: the replaced champion
    while it is watched (a rollback needs that evidence first), else the challenger; None when neither
    differs from the champion."""
    champion = alias_version(c, name, CHAMPION)
    champion = None if champion is None else str(champion)
    if (previous := watched_previous(c, name, champion)) is not None:
        return PREVIOUS, previous
    challenger = alias_version(c, name, CHALLENGER)
    return (CHALLENGER, str(challenger)) if challenger is not None and str(challenger) != champion else None


def rollback(task: str, settings: Settings, reason: str | None = None, numbers: dict | None = None) -> str:
    """Give ``champion`` back to the version it replaced and end the watch; returns that version. Both
    versions record it (tags, and a paragraph added to the model card) with ``reason`` and ``numbers``.
    The version rolled back from loses the ``challenger`` alias it kept from its promotion (its tags
    ``gate: rolled_back`` and ``rollback_reason`` say why): no service scores it in shadow again and no
    promotion, the monitor's or a person's ``popularity promote``, brings it back; a new challenger comes
    from a retraining."""
    c = client(settings)
    name = settings.model_name(task)
    current = alias_version(c, name, CHAMPION)
    if current is None:
        raise LookupError(f"{name} has no champion to roll back")
    current = str(current)
    previous = c.get_model_version(name, current).tags.get("previous_champion")
    if not previous:
        raise LookupError(f"{name} version {current} replaced no earlier champion; nothing to roll back to")
    reason = reason or "rolled back by hand"
    c.set_registered_model_alias(name, CHAMPION, previous)
    end_watch(c, name)
    dropped = drop_challenger(c, name, current)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    recorded = json.dumps(numbers or {})
    after = f"\n\nThe `{CHALLENGER}` alias was removed: it is neither shadowed nor promoted again." if dropped else ""
    for version, tags, line, end in (
            (current, {"gate": "rolled_back", "rolled_back_to": previous}, f"rolled back: champion returned to "
             f"version {previous}", after),
            (previous, {"restored_from": current}, f"restored as champion in place of version {current}", "")):
        for key, value in {**tags, "rollback_reason": reason[:5000], "rollback_numbers": recorded,
                           "rollback_at": at}.items():
            c.set_model_version_tag(name, version, key, value)
        card = c.get_model_version(name, version).description or ""
        c.update_model_version(name, version, description=f"{card}\n\n## Rollback ({at})\n\n{line}: {reason}"
                               + (f"\n\nNumbers: `{recorded}`" if numbers else "") + end)
    return previous


def champion_summary(task: str, settings: Settings) -> dict:
    """The ``model`` JSON summary: name, version, alias, family, how it was chosen, test metrics and baseline."""
    c = client(settings)
    name = settings.model_name(task)
    version = alias_version(c, name, CHAMPION)
    if version is None:
        raise LookupError(f"{name} has no champion yet; run `popularity run` or `popularity promote`")
    return _summary(c, name, version, CHAMPION)


def version_summary(c: MlflowClient, name: str, version: str) -> dict:
    """Registered ``version``'s summary (as :func:`champion_summary`'s); LookupError when there is none."""
    return _summary(c, name, str(version))


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
        # the champion alias on a version the gate did not promote (MLflow's own button): reported, not hidden
        **(review.gate_record(version, tags) if CHAMPION in (alias, *aliases) else {}),
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
