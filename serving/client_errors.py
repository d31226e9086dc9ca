"""A request the client got wrong is logged as the client's error: one line, no traceback.

BentoML logs every exception its API wrapper turns into an answer at ERROR with the whole traceback
(``Exception on /predict [POST]``), the 4xx ones included: a body that fails validation (pydantic's
``ValidationError``, answered 400) and its own exceptions with a 4xx ``error_code``. Those are the
client's mistakes, and a traceback each buries the server's own errors. :class:`ClientErrorsInOneLine`
rewrites them into one INFO line with the status and the reason (the fields and what was wrong, not the
values sent); an exception answered 5xx keeps its ERROR and its traceback.
"""

from __future__ import annotations

import logging

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

BENTOML_ERRORS = "bentoml._internal.server.http_app"  # the logger of BentoML's log_exception


def client_status(exc: BaseException) -> int | None:
    """The 4xx status BentoML answers ``exc`` with, or None when it is not the client's error."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException) and 400 <= int(exc.error_code) < 500:
        return int(exc.error_code)
    return None


def reason(exc: BaseException) -> str:
    """What the client got wrong, in one short line, without the values it sent."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:3])[:300]
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


class ClientErrorsInOneLine(logging.Filter):
    """On BentoML's error logger: a client error's record becomes one INFO line without its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_status(exc) if exc is not None else None
        if status is not None:
            record.msg, record.args = f"{record.getMessage()}: {status} {reason(exc)}", None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info, record.exc_text = None, None
        return True


def log_client_errors_in_one_line() -> None:
    """Install :class:`ClientErrorsInOneLine` on BentoML's error logger in this process (once)."""
    logger = logging.getLogger(BENTOML_ERRORS)
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())
