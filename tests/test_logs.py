"""Every log line written while serving a tenant names it, on one line."""

from __future__ import annotations

import io
import logging

import pytest
from werkzeug.test import Client

from dispatcher.logs import FORMAT, OneLineFormatter, configure_logging


def test_records_carry_the_tenant_even_on_a_shared_logger(
    echo_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for host, url in [
        ("localhost", "/acme/log"),
        ("localhost", "/globex/log"),
        ("umbrella.localhost", "/log"),
    ]:
        assert echo_client.get(url, headers={"Host": host}).status_code == 200
    records = [r for r in caplog.records if r.getMessage() == "hello from the app"]
    assert {r.name for r in records} == {"tests.apps.echo"}  # one logger for all three
    assert [r.tenant for r in records] == ["acme", "globex", "umbrella"]  # type: ignore[attr-defined]


def test_unhandled_error_is_logged_with_tenant(
    echo_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert echo_client.get("/globex/boom", headers={"Host": "localhost"}).status_code == 500
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.tenant == "globex"  # type: ignore[attr-defined]


def test_outside_a_request_the_tenant_is_a_dash(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("x").warning("boot")
    assert caplog.records[-1].tenant == "-"  # type: ignore[attr-defined]


def test_traceback_is_formatted_on_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(FORMAT))
    logger = logging.getLogger("one-line-test")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert "tenant=-" in text and "Traceback" in text and "ValueError: bad | thing" in text


def test_configure_logging_is_idempotent() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging()
        configure_logging()
        added = [h for h in root.handlers if h not in before]
        assert len([h for h in root.handlers if getattr(h, "is_dispatcher_handler", False)]) == 1
    finally:
        for handler in added:
            root.removeHandler(handler)
        root.setLevel(level)
