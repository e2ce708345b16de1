"""Run real uWSGI and real nginx for the end-to-end tests, on loopback and temporary folders.

:class:`Uwsgi` runs the project's ``uwsgi.ini`` as an operator would: the socket, stats address
and reload file come from the environment, processes and threads from the command line.
:class:`Nginx` runs a site file shipped in ``deploy/nginx/``, rendered by :func:`render_site`,
which changes only the listen addresses, the certificate paths and the snippet's path. Every
wait polls against a deadline::

    uwsgi = Uwsgi.start(folder / "uwsgi", tenants_file, socket=folder / "uwsgi.sock")
    nginx = Nginx.start("/usr/sbin/nginx", folder / "nginx", "path-mounts.conf", socket, certs)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "nginx"
SNIPPET = "dispatcher-uwsgi.conf"
#: uWSGI from the virtualenv that runs the tests (``.venv`` under ``make test``).
UWSGI = Path(sys.executable).parent / "uwsgi"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Process:
    """A server started in its own session, its output in a log file."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None):
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_text()[-3000:]
            raise RuntimeError(f"{self.log.name}: exited with {self.popen.returncode}:\n{tail}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; SIGKILL the whole process group if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        return self.popen.returncode


@dataclass(frozen=True)
class Tools:
    """The programs the tests run besides uWSGI."""

    nginx: str
    openssl: str


@dataclass(frozen=True)
class Worker:
    id: int
    pid: int
    accepting: bool


class Uwsgi(Process):
    """The project's uwsgi.ini, with ``processes`` x ``threads``."""

    socket: Path | None
    stats_address: tuple[str, int]
    reload_file: Path

    @classmethod
    def start(
        cls,
        folder: Path,
        tenants_file: Path,
        *,
        socket: Path | None = None,
        processes: int = 2,
        threads: int = 4,
        options: Sequence[str] = (),
    ) -> Uwsgi:
        folder.mkdir(parents=True, exist_ok=True)
        stats_port = free_port()
        reload_file = folder / "reload"
        reload_file.touch()
        old = time.time() - 3600  # a later touch must change the mtime uWSGI remembers
        os.utime(reload_file, (old, old))
        env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
        env.update(
            TENANTS_FILE=str(tenants_file),
            DISPATCHER_STATS=f"127.0.0.1:{stats_port}",
            DISPATCHER_RELOAD_FILE=str(reload_file),
            PYTHONPATH=str(ROOT),
        )
        if socket is not None:
            env["DISPATCHER_SOCKET"] = str(socket)
        argv = [UWSGI, "--ini", ROOT / "uwsgi.ini", "--processes", processes, "--threads", threads]
        server = cls([*map(str, argv), *options], folder / "uwsgi.log", env)
        server.socket = socket
        server.stats_address = ("127.0.0.1", stats_port)
        server.reload_file = reload_file
        try:
            server.wait_ready(processes)
        except BaseException:
            server.stop()
            raise
        return server

    def stats(self) -> dict:
        """uWSGI's stats document (JSON from the stats socket)."""
        with socket.create_connection(self.stats_address, timeout=5) as s:
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return json.loads(b"".join(chunks))

    def workers(self) -> list[Worker]:
        return [
            Worker(w["id"], w["pid"], bool(w["accepting"] and w["apps"]))
            for w in self.stats()["workers"]
        ]

    def ready_workers(self) -> list[Worker] | None:
        """The workers, if every one has loaded the app and accepts requests; else ``None``."""
        self.check_running()
        try:
            workers = self.workers()
        except OSError:  # the stats server is not up yet
            return None
        return workers if all(w.accepting and w.pid for w in workers) else None

    def wait_ready(self, processes: int, timeout: float = 30.0) -> list[Worker]:
        def ready() -> list[Worker] | None:
            workers = self.ready_workers()
            return workers if workers and len(workers) == processes else None

        return wait_for(ready, f"{processes} uWSGI workers to load the app", timeout)


def render_site(
    site: str, folder: Path, *, ports: tuple[int, int], socket: Path, certs: Path
) -> Path:
    """Write ``deploy/nginx/<site>`` and its snippet into ``folder``, aimed at the test servers.

    Every substitution must apply, and no system path may be left: if the shipped files change
    shape, this fails instead of testing something else.
    """
    http_port, https_port = ports
    snippet = _substitute(
        (DEPLOY / SNIPPET).read_text(),
        {r"unix:/run/dispatcher/uwsgi\.sock": f"unix:{socket}"},
    )
    text = _substitute(
        (DEPLOY / site).read_text(),
        {
            r"\blisten 80\b": f"listen 127.0.0.1:{http_port}",
            r"\blisten 443\b": f"listen 127.0.0.1:{https_port}",
            r"/etc/letsencrypt/live/[^/]+/": f"{certs}/",
            r"/etc/nginx/snippets/dispatcher-uwsgi\.conf": str(folder / SNIPPET),
        },
    )
    (folder / SNIPPET).write_text(snippet)
    (folder / site).write_text(text)
    return folder / site


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    for pattern, replacement in substitutions.items():
        text, count = re.subn(pattern, replacement.replace("\\", r"\\"), text)
        assert count, f"the shipped nginx config no longer contains {pattern!r}"
    code = "\n".join(line.partition("#")[0] for line in text.splitlines())
    leftover = re.findall(r"(?:/etc|/run|/var)/\S+", code)
    assert not leftover, f"system paths left in the rendered nginx config: {leftover}"
    return text


NGINX_CONF = """\
daemon off;
{user}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/temp/body;
    uwsgi_temp_path {folder}/temp/uwsgi;
    proxy_temp_path {folder}/temp/proxy;
    fastcgi_temp_path {folder}/temp/fastcgi;
    scgi_temp_path {folder}/temp/scgi;
    include {site};
}}
"""


class Nginx(Process):
    """nginx (``daemon off``) serving one shipped site file on two free loopback ports."""

    http_port: int
    https_port: int

    @classmethod
    def start(cls, binary: str, folder: Path, site: str, socket: Path, certs: Path) -> Nginx:
        (folder / "temp").mkdir(parents=True, exist_ok=True)
        ports = (free_port(), free_port())
        rendered = render_site(site, folder, ports=ports, socket=socket, certs=certs)
        # `include uwsgi_params` is relative to the folder of nginx.conf: the system's file.
        shutil.copy(nginx_conf_dir(binary) / "uwsgi_params", folder / "uwsgi_params")
        # As root, workers would run as "nobody" and could not reach the socket under tmp.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=user, folder=folder, site=rendered))
        argv = [binary, "-c", str(conf), "-p", f"{folder}/", "-e", str(folder / "error.log")]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t failed for {site}:\n{check.stderr}"
        server = cls(argv, folder / "nginx.log")
        server.http_port, server.https_port = ports
        try:
            wait_for(lambda: server.listening(), f"nginx ({site}) to listen", timeout=10)
        except BaseException:
            server.stop()
            raise
        return server

    def listening(self) -> bool:
        self.check_running()
        for port in (self.http_port, self.https_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True


def nginx_conf_dir(binary: str) -> Path:
    """The folder of the system nginx.conf (``--conf-path`` in ``nginx -V``)."""
    version = subprocess.run([binary, "-V"], capture_output=True, text=True).stderr
    match = re.search(r"--conf-path=(\S+)", version)
    return Path(match.group(1)).parent if match else Path("/etc/nginx")
