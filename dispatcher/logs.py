"""Put the tenant's name on every log record written while serving that tenant.

Tenants built from the same package share one logger (``app.logger`` is named after the
package), so the name cannot come from the logger. A log record factory puts it on every record
as ``record.tenant``: while a request is served, from the app context Flask pushes for it (the
dispatcher marks each tenant's app with its ``TenantConfig``), so nothing is done per request;
while a tenant is built or a command works on one, from :data:`current_tenant`
(:func:`tenant_context`); ``"-"`` outside any tenant. :func:`configure_logging` sends records to
stderr (uWSGI's log), one line per record::

    configure_logging()
    # 2026-11-21 10:00:00,123 ERROR tenant=acme tenants.notes: Exception on / [GET] | Traceback...
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from flask import current_app, has_app_context
from flask.logging import default_handler

#: The tenant being built, or worked on by a command, in this context; ``"-"`` when none.
current_tenant: ContextVar[str] = ContextVar("dispatcher_tenant", default="-")

FORMAT = "%(asctime)s %(levelname)s tenant=%(tenant)s %(name)s: %(message)s"


def install_record_factory() -> None:
    """Make every new log record carry ``record.tenant``. Safe to call more than once."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_tenant", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        name = current_tenant.get()
        if name == "-" and has_app_context():
            # Serving a request: the app knows its tenant (no per-request bookkeeping needed).
            tenant = current_app.extensions.get("dispatcher")
            if tenant is not None:
                name = tenant.name
        record.tenant = name
        return record

    factory.adds_tenant = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


#: What a request can carry that a terminal or log reader would obey: C0 and C1 controls,
#: DEL, Unicode's line and paragraph separators, and the bidirectional overrides.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: werkzeug's dev server colours its request lines (after escaping the request's own
#: control characters): those colour codes are its own, and dropped.
_WERKZEUG_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape_controls(text: str, newline: str | None = None) -> str:
    """``text`` with every control character written as an escape (``\\r``, ``\\x1b``), so
    it prints on one line and moves no cursor; a newline becomes ``newline`` if given."""
    if newline is not None:
        text = text.replace("\n", newline)
    return _CONTROL.sub(_escape, text)


class OneLineFormatter(logging.Formatter):
    """Formats a record, traceback included, on one line: log collectors split on newlines.

    The message may hold text from a request (Flask's own "Exception on /path [GET]" does), so
    every control character in it is escaped, a newline as ``\\n``; a traceback's lines are
    joined with `` | ``. So no request can start what looks like another line, or another
    tenant's: each line begins with its record's own time, level and tenant.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "tenant"):  # created before the factory was installed
            record.tenant = "-"
        message = record.message
        if record.name == "werkzeug":
            message = _WERKZEUG_COLOUR.sub("", message)
        record.message = escape_controls(message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record), " | ")


def configure_logging(level: int = logging.INFO, stream: Any = None) -> None:
    """Log to stderr with the tenant on each line. Idempotent: one handler, however often."""
    install_record_factory()
    root = logging.getLogger()
    if not any(getattr(h, "is_dispatcher_handler", False) for h in root.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(OneLineFormatter(FORMAT))
        handler.is_dispatcher_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def use_dispatcher_logging(logger: logging.Logger) -> None:
    """Drop Flask's own stderr handler from an app's logger when ours is installed.

    Flask adds it when it finds no handler, and it would print each record twice, once
    without the tenant's name.
    """
    if any(getattr(h, "is_dispatcher_handler", False) for h in logging.getLogger().handlers):
        logger.removeHandler(default_handler)


@contextlib.contextmanager
def tenant_context(name: str) -> Iterator[None]:
    """Log as tenant ``name`` inside the block (building its app, running a command on it)."""
    token = current_tenant.set(name)
    try:
        yield
    finally:
        current_tenant.reset(token)
