"""``dispatcher_tenant_state``: a series per tenant, kept without an object per series.

A worker has every tenant in some state, so this gauge has a series per tenant: 100,000 of
them on a node of 100,000 lazy tenants. As prometheus-client children they took about 0.8 KiB
and three garbage-collected objects each: 90 MiB more per worker once the first flush had
written them, and every full collection (a busy worker runs one every second or so) walked
them all, 0.16 s with every thread stopped. Here a change is a line, ``tenant state value``:

- in one process (the dev server, tests), kept in a dict that a collector reads at scrape
  time (:class:`StateValues`);
- under uWSGI, appended to ``states_<pid>.log`` in the server's metrics folder
  (:class:`StateLog`), which a scrape replays, worker by worker (:func:`read_state_logs`):
  the last value each worker wrote for a (tenant, state), added up over the workers that are
  alive (:func:`~dispatcher.metrics_files.tidy` removes a dead worker's log). A log holding
  more than twice the lines it needs is rewritten whole.

As with prometheus-client's gauges, a series once written stays, at 0 when no worker has
the tenant in that state (it moved on, or a reload removed it)::

    series = state_series(folder)         # a StateLog, or StateValues() when folder is None
    series.write([("acme", "lazy", 0), ("acme", "ready", 1)], {"acme": "ready"})
    read_state_logs(folder)               # {("acme", "ready"): 2, ...}: every worker's
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

NAME = "dispatcher_tenant_state"
DOCUMENTATION = "How many of the node's workers have the tenant in this state."
STATES = ("ready", "failed", "lazy", "maintenance")
#: A log is rewritten once it has this many lines more than twice its series.
_SLACK = 4096

#: ``(tenant, state, value)``: the tenant is (1) or is no longer (0) in that state.
Change = tuple[str, str, int]
Series = dict[tuple[str, str], int]


class StateValues:
    """One process's series, in memory: a prometheus-client collector of its own registry."""

    def __init__(self) -> None:
        self.values: Series = {}

    def write(self, changes: Iterable[Change], current: Mapping[str, str]) -> None:
        for tenant, state, value in changes:
            self.values[tenant, state] = value

    def collect(self) -> Iterator[Any]:
        yield family(dict(self.values))  # (one copy, in C: a flush may add series meanwhile)


class StateLog:
    """One worker's series, as lines appended to ``states_<pid>.log`` in ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._pid = 0
        self._lines = 0  # in the file
        self._series = 0  # in the file when it was last written whole

    def write(self, changes: Iterable[Change], current: Mapping[str, str]) -> None:
        """Append ``changes``; ``current`` is every tenant's state once they are applied.

        The first write of a process (a worker forked after a flush, say) starts its own log
        from ``current``, not from changes to what another process wrote; so does the next
        write after one that failed (a full disk): nothing it held is lost.
        """
        path = os.path.join(self.folder, f"states_{os.getpid()}.log")
        try:
            if self._pid != os.getpid():
                self._rewrite(path, ((tenant, state, 1) for tenant, state in current.items()))
                self._pid = os.getpid()
                return
            lines = [f"{tenant} {state} {value}\n" for tenant, state, value in changes]
            if not lines:
                return
            with open(path, "a", encoding="utf-8") as log:
                log.write("".join(lines))
            self._lines += len(lines)
            if self._lines > 2 * self._series + _SLACK:
                self._rewrite(path, ((t, s, v) for (t, s), v in _replay(path).items()))
        except BaseException:
            self._pid = 0
            raise

    def _rewrite(self, path: str, series: Iterable[Change]) -> None:
        """The log as ``series`` alone, swapped in whole: a scrape reads the old or the new."""
        partial = path + ".partial"
        lines = 0
        with open(partial, "w", encoding="utf-8") as log:
            for tenant, state, value in series:
                log.write(f"{tenant} {state} {value}\n")
                lines += 1
        os.replace(partial, path)
        self._lines = self._series = lines


def state_series(folder: str | None) -> StateLog | StateValues:
    """Where a process's states go: its log in the server's folder, or memory."""
    return StateLog(folder) if folder is not None else StateValues()


def read_state_logs(folder: str) -> Series:
    """Every worker's series in ``folder``, added up: how many have each (tenant, state)."""
    totals: Series = {}
    for path in glob.glob(os.path.join(glob.escape(folder), "states_*.log")):
        for key, value in _replay(path).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _replay(path: str) -> Series:
    """The last value written for each series of one log. A line still being appended (no
    end of line yet), or one that does not parse, is skipped."""
    try:
        with open(path, encoding="utf-8") as log:
            lines = log.read().split("\n")[:-1]
    except FileNotFoundError:  # its worker died and was tidied meanwhile
        return {}
    series: Series = {}
    for line in lines:
        fields = line.split(" ")
        if len(fields) == 3 and fields[1] in STATES and fields[2] in ("0", "1"):
            series[fields[0], fields[1]] = int(fields[2])
    return series


def family(series: Mapping[tuple[str, str], int]) -> Any:
    """``series`` as prometheus-client's metric family (labels in the order the multiprocess
    mode shows them)."""
    from prometheus_client.core import GaugeMetricFamily

    metric = GaugeMetricFamily(NAME, DOCUMENTATION, labels=("state", "tenant"))
    for (tenant, state), value in series.items():
        metric.add_metric((state, tenant), value)
    return metric


class StateLogs:
    """A collector of every worker's logs in a folder, for a scrape's registry."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Any]:
        yield family(read_state_logs(self.folder))
