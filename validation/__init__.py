"""Great Expectations suites for snapshots, features and predictions, with quarantine and Data Docs."""

from validation.runner import (
    ValidationReport,
    validate_features,
    validate_feedback,
    validate_predictions,
    validate_snapshot,
)

__all__ = ["ValidationReport", "validate_features", "validate_feedback", "validate_predictions", "validate_snapshot"]
