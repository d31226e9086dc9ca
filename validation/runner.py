"""Runs the suites through a GX 1.x Checkpoint and turns the results into one :class:`ValidationReport`.

Everything GX stores (data source, asset, batch definition, suites, validation definitions,
checkpoints) is added or updated on every run, so a second run in the same file context never
raises "already exists". The file context lives at ``settings.gx_dir`` (its Data Docs under
``uncommitted/data_docs/local_site``); tests use ``mode="ephemeral"``.

GX is imported on first use: its import takes seconds, and the CLI imports this package.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from pipelines.data import verdicts
from pipelines.data.verdicts import Verdict
from pipelines.settings import Settings

DATASOURCE = "popularity"


@dataclass
class ValidationReport:
    """What a flow needs to decide: go on (``success``) with ``clean_ids``, or stop with ``message``."""

    success: bool
    critical_failures: list[str]
    warnings: list[str]
    quarantined: int
    total: int
    clean_ids: list[str]
    docs_path: str | None
    results_path: str | None
    message: str
    quarantine_path: str | None = None
    checks: dict[str, int] = field(default_factory=dict)  # failed check → unexpected count (or 1)
    rejected: dict[str, int] = field(default_factory=dict)  # source rows lost at collection, by reason
    missing: dict[str, float] = field(default_factory=dict)  # each optional column's share of missing values

    @property
    def docs_hint(self) -> str:
        return f"; Data Docs: {self.docs_path}/index.html" if self.docs_path else ""

    def summary(self) -> dict:
        return {
            "success": self.success,
            "critical_failures": self.critical_failures,
            "warnings": self.warnings,
            "quarantined": self.quarantined,
            "total": self.total,
            "quarantined_share": self.quarantined / self.total if self.total else 0.0,
            "rejected": self.rejected,
            "missing_share": self.missing,
            "docs_path": self.docs_path,
            "results_path": self.results_path,
            "quarantine_path": self.quarantine_path,
            "message": self.message,
        }


def _context(settings: Settings, mode: str):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if mode == "file":
        settings.gx_dir.parent.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=settings.gx_dir.parent)  # GX adds the gx/ folder
    elif mode == "ephemeral":
        context = gx.get_context(mode="ephemeral")
    else:
        raise ValueError(f"mode is 'file' or 'ephemeral', not {mode!r}")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _checkpoint(context, name: str, suites: list):
    """Add or update the asset ``name``, its whole-frame batch definition, the suites and one checkpoint."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    source = context.data_sources.add_or_update_pandas(DATASOURCE)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch = asset.get_batch_definition("whole")
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe("whole")
    definitions = []
    for suite in suites:
        suite = context.suites.add_or_update(suite)
        definitions.append(context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{name}-{suite.name}", data=batch, suite=suite)))
    return context.checkpoints.add_or_update(gx.Checkpoint(
        name=name, validation_definitions=definitions, actions=[UpdateDataDocsAction(name="data_docs")],
        result_format={"result_format": "COMPLETE"},
    ))


def _docs_path(context) -> str | None:
    """The local Data Docs site's folder (``index.html`` inside): the whole site is what a run logs."""
    for site in context.get_docs_sites_urls():
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return os.path.dirname(unquote(urlparse(url).path))
    return None


def _run(frame: pd.DataFrame, name: str, suites: list, settings: Settings, mode: str, run_name: str,
         quarantine: bool, lost: dict[str, int] | None = None) -> tuple[ValidationReport, dict[int, list[str]]]:
    """Validate ``frame`` (index = row number); returns the report and each quarantined row's reasons.

    ``lost`` counts, by reason, the rows that never reached ``frame`` (collection rejects): they count
    toward the same share limit as the quarantined rows, so a run never goes on with a fraction of its data."""
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(settings, mode)
    checkpoint = _checkpoint(context, name, suites)
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))

    critical: Counter[str] = Counter()
    warned: Counter[str] = Counter()
    row_failures: Counter[str] = Counter()
    reasons: dict[int, list[str]] = defaultdict(list)
    for suite_result in result.run_results.values():
        for outcome in suite_result.results:
            if outcome.success:
                continue
            config = outcome.expectation_config
            check = (config.meta or {}).get("check", config.type)
            unexpected = outcome.result.get("unexpected_index_list")
            count = outcome.result.get("unexpected_count") or 1
            if quarantine and (config.meta or {}).get("quarantine") and unexpected is not None:
                row_failures[check] += count
                for index in unexpected:
                    if check not in reasons[index]:
                        reasons[index].append(check)
            elif config.severity == "warning":  # FailureSeverity is a str enum
                warned[check] += count
            else:
                critical[check] += count

    total = len(frame)
    rejected = sum((lost or {}).values())
    share = (len(reasons) + rejected) / (total + rejected) if total + rejected else 0.0
    limit = settings.validation.max_quarantine_share
    success = not critical and share <= limit
    parts = [", ".join(f"{check}: {n}" for check, n in critical.items())] if critical else []
    if rejected:
        by_count = sorted(lost.items(), key=lambda kv: -kv[1])
        parts.append(f"rejected {rejected} of {total + rejected} source rows at collection: "
                     + ", ".join(f"{reason}: {n}" for reason, n in by_count))
    if reasons or rejected:
        parts.append(f"{'kept' if success else 'would keep'} {total - len(reasons)} of {total + rejected} rows "
                     f"({share:.1%} lost, limit {limit:.1%})")
    if reasons:
        parts.append(f"quarantined {len(reasons)} of {total} rows: "
                     + ", ".join(f"{check}: {n}" for check, n in row_failures.items()))
    if warned:
        parts.append("warnings: " + ", ".join(f"{check}: {n}" for check, n in warned.items()))
    message = "; ".join([f"{name} validation {'passed' if success else 'failed'} ({total} rows)", *parts])

    results_dir = settings.root / "validation"
    results_dir.mkdir(parents=True, exist_ok=True)
    results_path = results_dir / f"{run_name}.json"
    results_path.write_text(json.dumps({  # GX's full results (with each expectation's meta and severity)
        "success": success, "message": message,
        "validation_results": [suite_result.to_json_dict() for suite_result in result.run_results.values()],
    }, indent=1, default=str))
    report = ValidationReport(
        success=success,
        critical_failures=[*critical] + ([*row_failures, *(["rejected_rows"] if rejected else [])]
                                         if share > limit else []),
        warnings=[*warned],
        quarantined=len(reasons),
        total=total,
        clean_ids=[],
        docs_path=_docs_path(context),
        results_path=str(results_path),
        message=message,
        checks=dict(critical + warned + row_failures),
    )
    return report, reasons


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def validate_snapshot(snapshot, settings: Settings, mode: str = "file") -> ValidationReport:
    """Run the manifest and images suites on a snapshot's manifest and quarantine the failing rows.

    Snapshots are immutable, so the quarantined rows (with a ``reasons`` column) go to
    ``<home>/quarantine/<snapshot-id>.parquet`` and the verdict that training obeys to
    ``<snapshot-id>.json`` beside it; ``clean_ids`` are the image ids the flow goes on with.
    """
    from validation import suites

    frame = suites.snapshot_frame(snapshot.manifest)
    scheme = snapshot.meta.get("label")
    columns = list(frame.columns)
    checks = [suites.manifest_suite(columns, scheme, settings), suites.images_suite(columns, settings)]
    lost = snapshot.lost_rows
    report, reasons = _run(frame, "snapshot", checks, settings, mode, run_name=f"snapshot-{snapshot.id}",
                           quarantine=True, lost=lost)
    report.rejected = lost
    report.missing = suites.missing_shares(snapshot.manifest)
    if any(report.missing.values()):
        report.message += "; missing values kept: " + ", ".join(
            f"{column} {share:.0%}" for column, share in report.missing.items() if share)
    target = settings.quarantine_dir / f"{snapshot.id}.parquet"
    if reasons:
        rows = snapshot.manifest.reset_index(drop=True).loc[sorted(reasons)]
        rows = rows.assign(reasons=[", ".join(reasons[i]) for i in rows.index])
        target.parent.mkdir(parents=True, exist_ok=True)
        rows.to_parquet(target, index=False)
        report.quarantine_path = str(target)
    else:
        target.unlink(missing_ok=True)
    ids = frame["image_id"] if "image_id" in frame else pd.Series(dtype=str)
    keep = ~ids.index.isin(list(reasons)) & ids.notna()
    report.clean_ids = [str(i) for i in ids[keep]]
    quarantined = frozenset(str(i) for i in ids[~keep & ids.notna()])
    verdicts.save(Verdict(report.success, quarantined, report.message, report.docs_path), settings.quarantine_dir,
                  snapshot.id)
    return report


def validate_features(features: pd.DataFrame, reference: pd.DataFrame | None, settings: Settings,
                      mode: str = "file") -> ValidationReport:
    """No NaN or infinite feature (critical); each inside its training range ± tolerance (warning)."""
    from validation import suites

    frame = suites.features_frame(features, reference, settings.validation.feature_range_tolerance)
    report, _ = _run(frame, "features", [suites.features_suite(list(frame.columns))], settings, mode,
                     run_name=f"features-{_stamp()}", quarantine=False)
    if "image_id" in frame:
        bad = (frame["nan_features"] > 0) | (frame["infinite_features"] > 0)
        report.clean_ids = [str(i) for i in frame.loc[~bad, "image_id"]]
    return report


def validate_predictions(scores: pd.Series | np.ndarray, task: str, settings: Settings,
                         mode: str = "file") -> ValidationReport:
    """Scores in [0, 1] for a binary task, finite for a regression; any failure is critical."""
    from validation import suites

    frame = pd.DataFrame({"score": np.asarray(scores, dtype=float).ravel()})
    report, _ = _run(frame, "predictions", [suites.predictions_suite(task)], settings, mode,
                     run_name=f"predictions-{task}-{_stamp()}", quarantine=False)
    return report


def validate_feedback(rows: pd.DataFrame, prior: pd.DataFrame, now: float, settings: Settings,
                      mode: str = "file") -> tuple[ValidationReport, dict[int, list[str]]]:
    """The feedback suite on a batch (``prior``: the stored observations of the same predictions);
    returns the report and each failing row's reasons. Bad rows are rejected, not a reason to refuse
    the batch, so the quarantine share does not apply."""
    from validation import suites

    frame = suites.feedback_frame(rows, prior, now)
    return _run(frame, "feedback", [suites.feedback_suite(list(frame.columns))],
                settings.with_group("validation", max_quarantine_share=1.0), mode,
                run_name=f"feedback-{_stamp()}", quarantine=True)
