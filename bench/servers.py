"""Real servers and a real load generator for bench/bench_scale.py: uWSGI on loopback, and wrk.

:class:`Server` starts uWSGI with the project's ``uwsgi.ini`` (the options production runs
with), overridden to one process and one thread, no request log and no recycling, serving
either the dispatcher (``wsgi:application``) or one tenant's app alone (``bench.alone``)::

    with Server(tenants_file) as server:       # boot: until the first request is answered
        print(server.boot_seconds, server.rss_kib())
        print(wrk(server.url("/acme/"), duration=5))
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from bench.report import ROOT

UWSGI = Path(sys.executable).with_name("uwsgi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(port: int, path: str, host: str | None = None, timeout: float = 60) -> tuple[int, float]:
    """One ``GET``, on a new connection: its status and the seconds until the whole answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


class Server:
    """One uWSGI server: the dispatcher over ``tenants_file``, or ``alone`` (a tenant's name)
    served by itself. Started (and its boot timed) on ``__enter__``, stopped on ``__exit__``."""

    def __init__(
        self,
        tenants_file: Path,
        *,
        alone: str | None = None,
        probe: tuple[str, str | None] = ("/_dispatcher/health", None),
        log: Path | None = None,
    ) -> None:
        self.tenants_file = tenants_file
        self.alone = alone
        self.probe = probe
        self.log = log or tenants_file.with_suffix(".uwsgi.log")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.boot_seconds = 0.0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def command(self) -> list[str]:
        command = [str(UWSGI), "--ini", str(ROOT / "uwsgi.ini")]
        command += ["--http-socket", f"127.0.0.1:{self.port}"]
        command += ["--processes", "1", "--threads", "1", "--max-requests", "0"]
        command += ["--disable-logging"]
        if self.alone is not None:
            command += ["--module", "bench.alone:application"]
        return command

    def __enter__(self) -> Server:
        env = {k: v for k, v in os.environ.items() if k != "DISPATCHER_SOCKET"}
        env["TENANTS_FILE"] = str(self.tenants_file)
        env["DISPATCHER_STATS"] = f"127.0.0.1:{free_port()}"
        env["DISPATCHER_RELOAD_FILE"] = str(self.tenants_file.with_suffix(".reload"))
        if self.alone is not None:
            env["BENCH_TENANT"] = self.alone
        with open(self.log, "ab") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        path, host = self.probe
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"uWSGI exited with {self.process.returncode}; see {self.log}")
            try:
                status, _ = get(self.port, path, host)
            except (ConnectionRefusedError, ConnectionResetError, http.client.HTTPException):
                time.sleep(0.002)
                continue
            self.boot_seconds = time.perf_counter() - started
            if status >= 400:
                raise SystemExit(f"GET {path} answered {status} at boot; see {self.log}")
            return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uWSGI: stop now, workers included
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def worker_pid(self) -> int:
        """The pid of the (only) worker: the master's child."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) != 1:
            raise SystemExit(f"expected one uWSGI worker, found {children}")
        return int(children[0])

    def rss_kib(self) -> int:
        """The worker's resident memory (``VmRSS``), in KiB."""
        status = Path(f"/proc/{self.worker_pid()}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))

    def get(self, path: str, host: str | None = None) -> tuple[int, float]:
        return get(self.port, path, host)


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str,
    *,
    host: str | None = None,
    duration: float = 5,
    connections: int = 8,
    latency: bool = False,
) -> dict[str, float]:
    """Run wrk with one thread: ``rps``, ``max`` latency in ms, and with ``latency``
    ``p50``/``p90``/``p99`` in ms."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s"]
    if host:
        command += ["-H", f"Host: {host}"]
    if latency:
        command.append("--latency")
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    # uWSGI's --http-socket closes each connection after its answer, as nginx's uwsgi_pass
    # does: wrk counts those closes as read errors and reconnects. Any other error is real.
    errors = re.search(
        r"Socket errors: connect (\d+), read \d+, write (\d+), timeout (\d+)", output
    )
    if "Non-2xx or 3xx" in output or (errors and any(int(n) for n in errors.groups())):
        raise SystemExit(f"wrk saw errors on {url}:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise SystemExit(f"cannot read wrk's output:\n{output}")
    result = {"rps": float(match.group(1))}
    found = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s", output, re.MULTILINE)
    if found:
        result["max"] = float(found.group(1)) * WRK_UNITS[found.group(2)]
    for percent in ("50", "90", "99"):
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if found:
            result[f"p{percent}"] = float(found.group(1)) * WRK_UNITS[found.group(2)]
    return result


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (make bench does it)")


def stop_all(servers: list[Server]) -> None:
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
