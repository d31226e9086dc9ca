"""What every command shares on the way out: the console (stderr), the ``--json`` summary line, and
the error model that :func:`cli.main.main` turns into one line and an exit code."""

from __future__ import annotations

import json
import math
import sys
from typing import NoReturn

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width


def emit(summary: dict, as_json: bool) -> None:
    """Print ``summary`` as the last stdout line under ``--json``."""
    if as_json:
        print(json.dumps(finite(summary), default=str))


def finite(value):
    """NaN and infinity become null, so the summary is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


class CommandError(Exception):
    """An error the user can act on; ``main`` prints it as one line and exits with ``code``. ``details``
    join the JSON line (a refused promotion still says which version and why)."""

    def __init__(self, message: str, code: int = 1, kind: str = "failed", details: dict | None = None):
        super().__init__(message)
        self.code, self.kind, self.details = code, kind, details or {}


def fail(message: str, code: int = 1, kind: str | None = None, details: dict | None = None) -> NoReturn:
    """Stop the command with ``message``; code 2 is a usage error."""
    raise CommandError(message, code, kind or ("usage" if code == 2 else "failed"), details)


# Exceptions that reach ``main`` unhandled, by kind; looked up only in modules already imported, so
# reporting an error never imports MLflow or httpx.
_KINDS = (("pipelines.registry", "RegistryUnavailable", "unavailable"),
          ("httpx", "TransportError", "unavailable"),
          ("pipelines.data.verdicts", "FailedValidation", "refused"),
          ("pipelines.data.images", "ImageError", "invalid_input"),
          ("builtins", "LookupError", "not_found"))


def error_kind(exc: BaseException) -> str:
    """The JSON ``kind`` of an exception that no command caught."""
    for module, name, kind in _KINDS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return kind
    return "failed"
