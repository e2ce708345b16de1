"""``python -m dispatcher top``: a live view of one node's tenants from its metrics endpoint.

Each refresh reads ``/_dispatcher/metrics`` and compares it with the previous read: requests/s,
p50 and p99 latency, the share of 5xx answers, requests in flight and each tenant's state,
busiest first. ``q`` or Ctrl-C quits. ``--once`` reads twice, ``--interval`` apart, prints one
table and exits (for scripts)::

    python -m dispatcher top --url http://127.0.0.1:8000
    python -m dispatcher top --url unix:/run/dispatcher/uwsgi.sock --once
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator

import click
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..metrics_read import ReadError, Row, Scrape, metrics_url, read, rows
from .common import tenants_file_option

#: uwsgi.ini's socket for nginx, if set: ``top`` on a production node reads it directly.
SOCKET_VARIABLE = "DISPATCHER_SOCKET"
#: The README's ``uwsgi --ini uwsgi.ini --http-socket 127.0.0.1:8000``.
LOCAL_URL = "http://127.0.0.1:8000"


def default_url() -> str:
    """The local node: uwsgi.ini's ``$DISPATCHER_SOCKET`` if set, else :data:`LOCAL_URL`."""
    socket = os.environ.get(SOCKET_VARIABLE)
    if not socket:
        return LOCAL_URL
    if "/" in socket:
        return f"unix:{socket}"
    if socket.startswith(":"):  # uWSGI's ":3031": every interface, so this host's loopback too
        socket = f"127.0.0.1{socket}"
    return f"uwsgi://{socket}"


@click.command()
@click.option(
    "--url",
    help="The node: http://HOST:PORT, unix:/path/to/uwsgi.sock or uwsgi://HOST:PORT. "
    f"Default: $DISPATCHER_SOCKET if set, else {LOCAL_URL}.",
)
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds between two reads; rates are averages over it.",
)
@click.option("--once", is_flag=True, help="Read twice, --interval apart, print one table, exit.")
@tenants_file_option  # accepted (DESIGN 6), not needed: the node's metrics say it all
def top(url: str | None, interval: float, once: bool) -> None:
    """Watch one node's tenants: requests/s, p50, p99, errors, in flight, state.

    Figures come from the node's /_dispatcher/metrics (which answers only clients that the
    tenants file's 'metrics: allow' lets in: this host, by default), summed over its workers.
    Rates and latencies cover the interval between two reads. Quit with q or Ctrl-C.
    """
    url = url or default_url()
    try:
        url = metrics_url(url)
    except ValueError as e:  # an unclosed [IPv6 address, say
        raise click.ClickException(f"cannot read {url}: not a URL ({e})") from None
    console = Console()
    try:
        before = read(url)
        if once:
            time.sleep(interval)
            console.print(table(url, before, read(url)))
            return
        watch(console, url, before, interval)
    except ReadError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass


def watch(console: Console, url: str, before: Scrape, interval: float) -> None:
    """Refresh every ``interval`` until ``q`` (or Ctrl-C)."""
    try:
        with keys() as pressed, Live(console=console, auto_refresh=False) as live:
            live.update(table(url, before, before), refresh=True)
            while True:
                if pressed(interval) in ("q", "Q"):
                    return
                after = read(url)
                live.update(table(url, before, after), refresh=True)
                before = after
    finally:
        # Live ends its last view with a newline only on a terminal: into a file or a pipe,
        # an error message would go on at the end of the table's last line.
        if not console.is_terminal:
            console.line()


@contextlib.contextmanager
def keys() -> Iterator[Callable[[float], str]]:
    """``pressed(timeout)``: the key typed within ``timeout`` seconds, or ``""``. Without a
    terminal on stdin it only waits (Ctrl-C still quits)."""
    if not sys.stdin.isatty():

        def wait(timeout: float) -> str:
            time.sleep(timeout)
            return ""

        yield wait
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # keys arrive one by one, unechoed; Ctrl-C still interrupts

    def pressed(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else ""

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def table(url: str, before: Scrape, after: Scrape) -> Table:
    """The view of the interval between two reads."""
    tenants = rows(before, after)
    seconds = after.taken - before.taken
    total = sum(r.rate for r in tenants)
    caption = f"{len(tenants)} tenants, {total:.1f} req/s" + (
        f" over {seconds:.1f} s" if seconds > 0 else " (rates from the next read on)"
    )
    # Text, not str: rich would read "[...]" in a URL or a label value as markup (and raise).
    title = Text(f"dispatcher top: {url}", style="table.title")
    view = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    view.add_column("TENANT", no_wrap=True)
    for heading in ("REQ/S", "P50", "P99", "ERRORS", "IN FLIGHT"):
        view.add_column(heading, justify="right", no_wrap=True)
    view.add_column("STATE", no_wrap=True)
    for row in tenants:
        view.add_row(*map(Text, cells(row, seconds > 0)), style=style(row))
    return view


def cells(row: Row, rated: bool) -> tuple[str, ...]:
    return (
        row.tenant,
        f"{row.rate:.1f}" if rated else "-",
        duration(row.p50),
        duration(row.p99),
        f"{row.errors:.0%}" if rated and row.rate else "-",
        str(row.in_flight),
        row.state,
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def style(row: Row) -> str:
    if "failed" in row.state or row.errors >= 0.05:
        return "red"
    return "yellow" if "maintenance" in row.state else ""


COMMANDS = (top,)
