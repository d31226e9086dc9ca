"""The prediction tasks: which manifest column each one learns and which metric ranks its models.

``binary`` learns the 0/1 ``label`` (popular or not) and is ranked by ROC AUC; ``score`` regresses
the continuous popularity ``score`` and is ranked by Spearman's rank correlation.
"""

from __future__ import annotations

TARGET = {"binary": "label", "score": "score"}
PRIMARY = {"binary": "roc_auc", "score": "spearman"}
TASKS = tuple(TARGET)


class TaskError(ValueError):
    """A task name that is not one of :data:`TASKS`."""


def check_task(task: str) -> str:
    if task not in TARGET:
        raise TaskError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    return task
