"""BentoML's own error log (``log_exception``, what its API wrapper calls for every exception it answers) with
the service's filter on: a client's 4xx is one INFO line with the reason, a 5xx keeps its ERROR and traceback.
tests/integration/test_service_guards.py sees the 4xx line in a served service's log."""

from __future__ import annotations

import logging

import pytest
from bentoml._internal.server.http_app import log_exception
from bentoml.exceptions import BadInput, InternalServerError
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request

from serving.client_errors import BENTOML_ERRORS, log_client_errors_in_one_line


class Form(BaseModel):
    followers: float = Field(ge=0)


def _logged(caplog, exc: BaseException) -> logging.LogRecord:
    """The record BentoML logs for ``exc`` answered on POST /predict."""
    log_client_errors_in_one_line()
    request = Request({"type": "http", "method": "POST", "path": "/predict", "headers": []})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=BENTOML_ERRORS):
        try:
            raise exc
        except type(exc):
            log_exception(request)
    (record,) = caplog.records
    return record


def test_a_validation_error_is_one_info_line_with_the_field_and_not_the_value(caplog):
    with pytest.raises(ValidationError) as bad:
        Form(followers=-123456789)
    record = _logged(caplog, bad.value)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == ("Exception on /predict [POST]: 400 followers: Input should be greater than "
                                   "or equal to 0")
    assert "Traceback" not in caplog.text and "123456789" not in caplog.text


def test_bentomls_own_4xx_is_one_line_and_a_5xx_keeps_its_traceback(caplog):
    record = _logged(caplog, BadInput("the body is not JSON"))
    assert record.levelno == logging.INFO and record.getMessage().endswith(": 400 the body is not JSON")
    for exc in (InternalServerError("the model failed"), RuntimeError("a bug")):
        record = _logged(caplog, exc)
        assert record.levelno == logging.ERROR and record.exc_info[1] is exc
        assert record.getMessage() == "Exception on /predict [POST]" and "Traceback" in caplog.text
