"""Structured logs: one JSON object a line, with exceptions rendered as data."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from facesearch_common.logging import configure_logging


def _fail() -> None:
    secret = "sk-do-not-log"  # noqa: F841 - a local the log must not carry
    raise ZeroDivisionError("division by zero")


@pytest.mark.parametrize("logger", ["structlog", "stdlib"])
def test_an_exception_is_logged_with_its_stack_and_without_locals(
    logger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json_output=True)
    try:
        _fail()
    except ZeroDivisionError:
        if logger == "structlog":
            structlog.get_logger("test").exception("request failed", path="/search")
        else:  # as uvicorn logs an unhandled error
            logging.getLogger("uvicorn.error").exception("request failed")
    [line] = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    [exception] = record["exception"]
    assert (exception["exc_type"], exception["exc_value"]) == ("ZeroDivisionError", "division by zero")
    assert [frame["name"] for frame in exception["frames"]][-1] == "_fail"
    assert "traceback object" not in line and "sk-do-not-log" not in line
