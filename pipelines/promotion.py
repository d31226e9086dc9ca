"""The promotion gate: a challenger becomes champion only if it beats the champion by the margin on test
rows neither model was trained or chosen on and passes the sanity checks (floor, no NaN, the predictions
suite, latency, flip and JPEG stability) and, with ``promotion.live_outcomes``, is no worse than the champion
on that many live outcomes of the requests it scored in shadow. The decision, its numbers and the thresholds
it applied are written on the model version either way, with a challenger-vs-champion table on the
challenger's run. A promotion keeps the replaced champion watched in shadow (``registry.watch_previous``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.entities import Metric
from PIL import Image

from pipelines import evaluation, model_card, registry, review, version_chart
from pipelines.data.snapshots import Snapshot
from pipelines.features.social import social_inputs
from pipelines.settings import PromotionSettings, Settings
from pipelines.tasks import PRIMARY, TARGET
from pipelines.training.data import TrainingData

#: Checks the challenger's test scores (the flow passes the Great Expectations predictions suite):
#: ``(passed, message)``. Pipelines cannot import validation, which sits above them.
PredictionsCheck = Callable[[np.ndarray], tuple[bool, str]]
#: The challenger against the champion on live outcomes of the requests it scored in shadow (the flow passes
#: monitoring's paired comparison): ``(challenger version, champion version, outcomes needed)`` → its summary
#: (``outcomes``, ``challenger``, ``champion``, ``difference``, ``low``, ``high``, ``verdict``), None when the
#: challenger scored no request in shadow of that champion.
LiveEvidence = Callable[[str, str, int], dict | None]
LIVE_OK = ("better", "no difference")  # the paired interval's verdicts that show the challenger no worse


@dataclass
class Check:
    """One check of the gate: what the challenger measured, the champion's figure, the threshold applied."""

    name: str
    passed: bool
    challenger: float | None = None
    threshold: float | None = None
    champion: float | None = None
    message: str = ""


@dataclass
class GateResult:
    passed: bool
    version: str
    champion_version: str | None
    outcomes: list[Check] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    loosened: dict[str, float] = field(default_factory=dict)  # thresholds set looser than the defaults
    rows: dict[str, int] = field(default_factory=dict)  # what the challenger learned from and was judged on

    @property
    def checks(self) -> dict[str, bool]:
        return {c.name: c.passed for c in self.outcomes}

    @property
    def thresholds(self) -> dict[str, float]:
        return {c.name: c.threshold for c in self.outcomes if c.threshold is not None}

    @property
    def reason(self) -> str:
        failed = [c for c in self.outcomes if not c.passed]
        numbers = ", ".join(f"{k}={v:.4g}" for k, v in self.numbers.items())
        verdict = ("promoted to champion" if self.passed
                   else f"not promoted: failed {', '.join(c.name for c in failed)}")
        signed = [c for c in self.outcomes if c.name == "approval" and c.passed]  # who signed, and why
        details = "".join(f"; {c.name}: {c.message}" for c in [*failed, *signed] if c.message)
        loosened = f"; thresholds loosened from the defaults: {self.loosened}" if self.loosened else ""
        return f"{verdict} ({numbers}){details}{loosened}"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"check": c.name, "challenger": c.challenger, "champion": c.champion,
                              "threshold": c.threshold, "passed": c.passed} for c in self.outcomes])


def loosened_thresholds(p: PromotionSettings) -> dict[str, float]:
    """Thresholds a setting made easier to pass than the defaults: recorded, never silent."""
    default, current = PromotionSettings().model_dump(), p.model_dump()
    current.pop("rollback_watch_hours")  # what happens after a promotion, not a threshold of the gate
    for key in ("approval", "approval_timeout_s"):  # who signs after the gate, not a threshold of it
        current.pop(key)
    looser = {key: value < default[key] if key in ("margin", "floor_roc_auc", "floor_spearman", "live_outcomes")
              else value > default[key] for key, value in current.items()}
    return {key: value for key, value in current.items() if looser[key]}


def live_check(needed: int, evidence: dict | None) -> Check:
    """``live_outcomes``: passed once ``needed`` shadowed outcomes give a verdict that the challenger is no
    worse than the champion (the paired bootstrap interval of their difference does not lie wholly below 0)."""
    have = int(evidence["outcomes"]) if evidence else 0
    verdict = evidence["verdict"] if evidence else None
    if have < needed or verdict not in (*LIVE_OK, "worse"):
        why = "" if have < needed else f"; no verdict on them yet ({verdict})"
        return Check("live_outcomes", False, float(have), float(needed),
                     message=f"waiting for {needed} live outcomes (have {have}){why}")
    d, low, high = (float(evidence[k]) for k in ("difference", "low", "high"))
    passed = verdict in LIVE_OK
    numbers = f"difference {d:+.3f} [{low:+.3f}, {high:+.3f}] on {have} live outcomes"
    return Check("live_outcomes", passed, evidence["challenger"], float(needed), evidence["champion"],
                 message=f"{'no worse' if passed else 'worse'} on live outcomes: {numbers}")


def _latency_ms(model, images: list[Image.Image]) -> float:
    sample = images[:32]
    model.predict_images(sample[:2])  # warm-up
    start = time.perf_counter()
    model.predict_images(sample)
    return (time.perf_counter() - start) * 1000 / len(sample)


def _unseen_by_champion(test: pd.DataFrame, champion_tags: dict, task: str, settings: Settings) -> pd.Series:
    """Test rows the champion was neither trained nor chosen on (its snapshot's train and validation rows)."""
    snapshot = Snapshot.open(settings.datasets_dir, champion_tags["snapshot"])
    seen = TrainingData(snapshot, task, settings, split=champion_tags.get("split", "group"),
                        require_faces=champion_tags.get("require_faces") == "True").manifest
    seen = seen.loc[seen["split"] != "test", "image_id"]
    return ~test["image_id"].isin(seen)


def _stability(model, data: TrainingData) -> dict[str, float]:
    """Flip and JPEG stability on the challenger's validation split, measured as training measured it when it
    chose the challenger: the same rows, the same estimate, held to the same thresholds, so a candidate that
    selection called stable is not refused as unstable by a noisier sample of 60 test rows. Stability needs
    no label, so these rows judge it fairly; the metric checks stay on rows neither model has seen."""
    rows = data.rows("val")
    if rows.empty:  # a snapshot without a validation split: the test rows are all there is
        rows = data.rows("test")
    images = data.snapshot.decode_images(rows["image_path"], data.settings.images)  # as data.images decodes them
    social = social_inputs(rows)
    scores = model.predict_images(images, social)["score"].to_numpy()
    return {**evaluation.stability(model, images, scores, social), "stability_rows": len(images)}


def gate(task: str, settings: Settings, predictions_check: PredictionsCheck | None = None,
         live: LiveEvidence | None = None) -> GateResult:
    """Score challenger and champion on the challenger's test rows that neither was trained or chosen on,
    and apply every check; with ``promotion.live_outcomes`` above 0 (and ``live``), also the live one.
    Only a missing alias means "no champion": a registry error stops here."""
    c = registry.client(settings)
    name = settings.model_name(task)
    version = registry.alias_version(c, name, registry.CHALLENGER)
    if version is None:
        raise LookupError(f"{name} has no challenger; run `popularity train` first")
    champion_version = registry.alias_version(c, name, registry.CHAMPION)
    if champion_version == version:
        champion_version = None
    tags = c.get_model_version(name, version).tags
    snapshot = Snapshot.open(settings.datasets_dir, tags["snapshot"])
    data = TrainingData(snapshot, task, settings, split=tags.get("split", "group"),
                        require_faces=tags.get("require_faces") == "True")
    test = data.rows("test")
    if champion_version:
        unseen = _unseen_by_champion(test, c.get_model_version(name, champion_version).tags, task, settings)
        test = test[unseen.to_numpy()]
    if test.empty:
        raise ValueError(f"no test row of snapshot {snapshot.id} is unseen by champion v{champion_version}")
    images = snapshot.decode_images(test["image_path"], settings.images)
    social = social_inputs(test)
    y = test[TARGET[task]].to_numpy()
    primary = PRIMARY[task]
    p = settings.promotion
    challenger, _ = registry.load_model(task, settings, version)
    scores = challenger.predict_images(images, social)["score"].to_numpy()
    finite = bool(np.all(np.isfinite(scores)))
    value = evaluation.task_metrics(task, y, scores)[primary] if finite else float("nan")  # refused, not a crash
    numbers = {f"challenger_{primary}": value, "gate_rows": len(test), "latency_ms": _latency_ms(challenger, images),
               **_stability(challenger, data)}
    floor = p.floor_roc_auc if task == "binary" else p.floor_spearman
    outcomes = [
        Check("no_nan", finite, message="" if finite else f"{int((~np.isfinite(scores)).sum())} scores not finite"),
        Check("floor", bool(np.isfinite(value) and value >= floor), value, floor),
        Check("latency", numbers["latency_ms"] <= p.latency_budget_ms, numbers["latency_ms"], p.latency_budget_ms),
        *(Check(check, passed, shift, limit, message="" if passed else f"{measure} {shift:.3f} over {limit:g} on "
                f"{numbers['stability_rows']} validation images")
          for check, measure, shift, limit, passed in evaluation.stability_verdicts(numbers, p)),
    ]
    if predictions_check is not None:
        ok, message = predictions_check(scores)
        outcomes.append(Check("predictions_suite", ok, message="" if ok else message))
    if champion_version:
        champion_model, _ = registry.load_model(task, settings, champion_version)
        champion_scores = champion_model.predict_images(images, social)["score"].to_numpy()
        champion_value = evaluation.task_metrics(task, y, champion_scores)[primary]
        numbers[f"champion_{primary}"] = champion_value
        outcomes.append(Check("beats_champion", bool(value >= champion_value + p.margin)
                              or not np.isfinite(champion_value), value, p.margin, champion_value))
        if p.live_outcomes > 0:
            if live is None:
                raise ValueError("promotion.live_outcomes is set but no live comparison was given to the gate")
            evidence = live(version, champion_version, p.live_outcomes)
            outcomes.append(live_check(p.live_outcomes, evidence))
            numbers.update({f"live_{k}": float(evidence[k]) for k in ("outcomes", "difference", "low", "high")
                            if evidence and evidence.get(k) is not None})
    rows = {"collected": len(snapshot.manifest) + len(snapshot.rejects), "rejected": len(snapshot.rejects),
            **data.row_counts, "gate_rows": len(test), "stability_rows": int(numbers["stability_rows"])}
    return GateResult(all(o.passed for o in outcomes), version, champion_version, outcomes, numbers,
                      loosened_thresholds(p), rows)


def promote(task: str, settings: Settings, predictions_check: PredictionsCheck | None = None,
            live: LiveEvidence | None = None, approve: review.Approver | None = None) -> GateResult:
    """Run the gate; on success move ``champion`` to the challenger and watch the replaced champion in
    shadow for ``promotion.rollback_watch_hours``. The decision, its numbers and its thresholds are written
    on the version, and the challenger-vs-champion table on its run, either way; the parent run gets the
    gate's numbers as metrics and the chart of the primary metric across all versions.

    With ``approve`` (``promotion.approval: required``) a challenger that passed every check is promoted only
    once a person approves it: its card says it awaits approval meanwhile, and a rejection or no answer
    within ``promotion.approval_timeout_s`` refuses it (an ``approval`` check that failed)."""
    c = registry.client(settings)
    name = settings.model_name(task)
    result = gate(task, settings, predictions_check, live)
    version_tags = c.get_model_version(name, result.version).tags
    run = c.get_run(version_tags["run_id"])
    parent = run.data.tags.get("mlflow.parentRunId", run.info.run_id)
    chart = (f"`{version_chart.chart_path(PRIMARY[task])}` (and its series, `.json`) among the artifacts of the "
             f"parent run [{parent}](#/experiments/{run.info.experiment_id}/runs/{parent})")
    asking = approve is not None and result.passed and result.champion_version != result.version
    card = _record(c, name, result, run, chart, "Awaiting a person's approval" if asking else None)
    if asking:
        decision = approve(review.Review(name, result.version, version_tags.get("candidate"), card,
                                         settings.promotion.approval_timeout_s))
        result.outcomes.append(Check("approval", decision.approved, message=decision.message))
        result.passed = result.passed and decision.approved
        for key, value in {"approval": decision.outcome, "approval_reason": decision.reason[:500]}.items():
            c.set_model_version_tag(name, result.version, key, value)
        _record(c, name, result, run, chart)
    champion = result.version if result.passed else registry.alias_version(c, name, registry.CHAMPION)
    primary = PRIMARY[task]  # the gate's numbers as columns of the parent run, beside the chosen candidate's
    columns = {"promoted": float(result.passed), f"gate_{primary}": result.numbers[f"challenger_{primary}"]}
    if f"champion_{primary}" in result.numbers:
        columns[f"gate_champion_{primary}"] = result.numbers[f"champion_{primary}"]
    now = int(time.time() * 1000)
    c.log_batch(parent, metrics=[Metric(key, float(value), now, 0) for key, value in columns.items()])
    version_chart.log(c, parent, name, primary, champion)
    if result.passed and result.champion_version != result.version:
        if result.champion_version:
            c.set_model_version_tag(name, result.version, "previous_champion", result.champion_version)
        c.set_registered_model_alias(name, registry.CHAMPION, result.version)
        registry.watch_previous(c, name, result.champion_version, settings.promotion.rollback_watch_hours)
    return result


def _record(c, name: str, result: GateResult, run, chart: str, status: str | None = None) -> str:
    """Write the decision on the version (its card as the description, the tags) and on its run (the table,
    the card, the JSON); ``status`` (awaiting approval) records ``gate: pending``. Returns the card."""
    card = model_card.render(name, result.version, c.get_model_version(name, result.version).tags,
                             run.data.metrics, result.reason, result.table(), result.rows, result.loosened,
                             status, chart)
    c.update_model_version(name, result.version, description=card)
    tags = {"gate": "pending" if status else "passed" if result.passed else "failed", "gate_reason": result.reason,
            "gate_numbers": json.dumps(result.numbers), "gate_thresholds": json.dumps(result.thresholds),
            "gate_loosened": json.dumps(result.loosened)}
    for key, value in tags.items():
        c.set_model_version_tag(name, result.version, key, value)
    run_id = run.info.run_id
    c.log_text(run_id, model_card.markdown_table(result.table()), "gate/gate.md")
    c.log_text(run_id, card, "gate/model_card.md")
    c.log_dict(run_id, {"reason": result.reason, **tags}, "gate/gate.json")
    return card
