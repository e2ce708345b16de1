"""Every log line written while serving a tenant names it, on one line."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator

import pytest
from werkzeug.test import Client

from dispatcher.logs import FORMAT, OneLineFormatter, configure_logging, install_record_factory


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
    install_record_factory()  # as a dispatcher does; the test must not rely on an earlier one
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


# -- one line per record, whatever a request carries (DESIGN 5) --------------------------------

#: What a forger would put in a path (percent-encoded, as a client sends it), and how it must
#: show in the log: a fake next line of another tenant, ANSI sequences that would clear the
#: screen, a NUL, DEL and C1 control, Unicode's line separator and right-to-left override.
FORGED = "2026-01-01%2000:00:00,000%20ERROR%20tenant=globex%20tests.apps.echo:%20forged"
SHOWN = "2026-01-01 00:00:00,000 ERROR tenant=globex tests.apps.echo: forged"
HOSTILE_PATHS = {
    "crlf": ("%0d%0a" + FORGED, "\\r\\n" + SHOWN),
    "lf": ("%0a" + FORGED, "\\n" + SHOWN),
    "cr": ("%0d" + FORGED, "\\r" + SHOWN),
    "esc": ("%1b[2J%1b[1A", "\\x1b[2J\\x1b[1A"),
    "nul-del-c1": ("a%00b%7fc%c2%85d", "a\\x00b\\x7fc\\x85d"),
    "unicode-separators": ("a%e2%80%a8b%e2%80%aec", "a\\u2028b\\u202ec"),
}
#: A record as OneLineFormatter writes it: date, time, level, the tenant, the logger.
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (WARNING|ERROR) tenant=(\S+) \S+: ")


@pytest.fixture
def log_lines(echo_client: Client) -> Iterator[Callable[[], list[str]]]:
    """The dispatcher's stderr handler, on a buffer: a function returning its lines so far."""
    stream = io.StringIO()
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    configure_logging(logging.WARNING, stream)
    yield lambda: stream.getvalue().split("\n")[:-1]
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("route", ["boom", "log"])
@pytest.mark.parametrize("raw, shown", HOSTILE_PATHS.values(), ids=HOSTILE_PATHS.keys())
def test_a_request_cannot_forge_a_log_line(
    echo_client: Client, log_lines: Callable[[], list[str]], route: str, raw: str, shown: str
) -> None:
    response = echo_client.get(
        f"/acme/{route}/{raw}", headers={"Host": "localhost", "User-Agent": "ua\x1b[31m"}
    )
    assert response.status_code == (500 if route == "boom" else 200)
    lines = log_lines()
    # boom: Flask's "Exception on /acme/boom/... [GET]", its traceback on the same line;
    # log: the app's message with the path and User-Agent as arguments, and an f-string.
    assert len(lines) == (1 if route == "boom" else 2), lines
    for line in lines:
        match = LINE.match(line)
        assert match is not None, line
        assert match.group(2) == "acme"  # the real tag comes first; forged text is inside
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]", line), line
        assert f"/{route}/{shown}" in line
    if route == "boom":
        assert "Exception on /boom/" in lines[0] and " [GET] | Traceback" in lines[0]
    else:
        assert lines[0].endswith(" by ua\\x1b[31m")


def test_the_message_is_escaped_and_the_traceback_joined() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(tenant)s %(message)s"))
    logger = logging.getLogger("one-line-message-test")
    logger.addHandler(handler)
    try:
        logger.warning("args: %s and %r", "a\nb\rc", "d\x1be")
        logger.warning("mapping: %(path)s", {"path": "p\nq"})
        logger.warning("pre-formatted: a\nb\tc\x00")
        try:
            raise ValueError("bad\x1b[2Jthing")
        except ValueError:
            logger.exception("failed\non /x")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().split("\n")
    assert lines[:3] == [
        "- args: a\\nb\\rc and 'd\\x1be'",
        "- mapping: p\\nq",
        "- pre-formatted: a\\nb\\tc\\x00",
    ]
    assert lines[3].startswith("- failed\\non /x | Traceback (most recent call last): | ")
    assert lines[3].endswith(" | ValueError: bad\\x1b[2Jthing")
    assert lines[4:] == [""]
