"""Ask every node of a fleet for its health, and whether they all serve one tenants file.

Each node's ``/_dispatcher/health`` carries ``tenants_file_sha256``, the hash of the tenants
file it last loaded (DESIGN section 13). A node is reached by HTTP(S) at its base URL, or by
the uwsgi protocol at its ``DISPATCHER_SOCKET`` (``uwsgi://10.0.0.11:3031``,
``unix:/run/dispatcher/uwsgi.sock``), the address nginx itself uses, so nodes need no HTTP
port of their own. The nodes are asked at once, each with its own timeout::

    healths = fleet_health(["uwsgi://10.0.0.11:3031", "uwsgi://10.0.0.12:3031"], timeout=5)
    problem = disagreement(healths)      # None when every node answered with the same file
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .rules import RESERVED_PREFIX

__all__ = ["NodeHealth", "check_url", "disagreement", "fleet_health", "node_health"]

HEALTH_PATH = f"{RESERVED_PREFIX}/health"
#: A health answer is a few hundred bytes; anything past this is not the dispatcher's.
_MAX_BODY = 64 * 1024
_STATES = ("ready", "lazy", "failed", "maintenance")


@dataclass(frozen=True)
class NodeHealth:
    """What one node said: the file it serves and its tenant counts, or why it did not say."""

    url: str
    sha256: str | None = None
    tenants: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None

    def line(self, width: int = 0) -> str:
        """``URL  3f2a9c1e0b7d  ready 3  lazy 997  failed 0  maintenance 0``, or the error."""
        if self.error is not None or self.sha256 is None:
            return f"{self.url.ljust(width)}  -             error: {self.error}"
        counts = "  ".join(f"{state} {self.tenants.get(state, 0)}" for state in _STATES)
        return f"{self.url.ljust(width)}  {self.sha256[:12]}  {counts}"


def check_url(url: str) -> str | None:
    """Why ``url`` is not a node address ``status`` can reach; ``None`` if it is one."""
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError as e:  # an unclosed [IPv6 address, say
        return f"not a URL ({e}); a node's base URL looks like http://10.0.0.11:8000"
    if parsed.scheme in ("http", "https", "uwsgi") and parsed.hostname:
        try:
            parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            return "its port is not a number from 0 to 65535"
        if parsed.scheme == "uwsgi" and (parsed.port is None or parsed.path not in ("", "/")):
            return "a uwsgi:// address is the node's DISPATCHER_SOCKET, HOST:PORT and no path"
        return None
    if parsed.scheme == "unix" and url[len("unix:") :].startswith("/"):
        return None
    return (
        "use the node's base URL (http://10.0.0.11:8000) or its DISPATCHER_SOCKET "
        "(uwsgi://10.0.0.11:3031 or unix:/run/dispatcher/uwsgi.sock)"
    )


def fleet_health(urls: Sequence[str], timeout: float) -> list[NodeHealth]:
    """Every node's health, in the order given, asked all at once."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(urls))) as pool:
        return list(pool.map(lambda url: node_health(url, timeout), urls))


def disagreement(healths: Sequence[NodeHealth]) -> str | None:
    """Why the fleet is not consistent (a node silent, or files that differ), else ``None``."""
    silent = [h.url for h in healths if h.sha256 is None]
    files = Counter(h.sha256 for h in healths if h.sha256 is not None)
    problems = []
    if len(files) > 1:
        each = ", ".join(f"{sha[:12]} on {count} node(s)" for sha, count in files.most_common())
        problems.append(
            f"drift: the nodes serve {len(files)} different tenants files ({each}); put the "
            "same file on every node (docs/scaling.md)"
        )
    if silent:
        problems.append(f"{len(silent)} node(s) did not answer: {', '.join(silent)}")
    return "\n".join(problems) or None


def node_health(url: str, timeout: float) -> NodeHealth:
    """Ask one node; any failure becomes the :attr:`NodeHealth.error` that says what went wrong."""
    try:
        if url.startswith(("uwsgi:", "unix:")):
            status, body = _ask_uwsgi(url, timeout)
        else:
            status, body = _ask_http(url, timeout)
    except TimeoutError:
        return NodeHealth(url, error=f"no answer within {timeout:g} s")
    except (OSError, http.client.HTTPException) as e:
        return NodeHealth(url, error=_reason(e))
    if status != 200:
        return NodeHealth(url, error=f"its health answered {status}, not 200")
    return _parse(url, body)


def _parse(url: str, body: bytes) -> NodeHealth:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("tenants"), dict):
        return NodeHealth(url, error="the answer is not a dispatcher's health (wrong address?)")
    sha256 = data.get("tenants_file_sha256")
    if not isinstance(sha256, str):
        return NodeHealth(url, error="its health has no tenants_file_sha256 (an older version?)")
    tenants = {k: v for k, v in data["tenants"].items() if isinstance(v, int)}
    return NodeHealth(url, sha256, tenants)


def _reason(error: BaseException) -> str:
    """``connection refused`` rather than ``<urlopen error [Errno 111] Connection refused>``."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error.reason, str):
        return _reason(error.reason)
    if isinstance(error, socket.gaierror):
        return f"cannot resolve its host name ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return str(error) or type(error).__name__


def _ask_http(url: str, timeout: float) -> tuple[int, bytes]:
    # Straight to the node: a $http_proxy set for the outside world must not be in the way.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url.rstrip("/") + HEALTH_PATH)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(_MAX_BODY)
    except urllib.error.HTTPError as e:
        return e.code, b""
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise e.reason from None
        raise


def _ask_uwsgi(url: str, timeout: float) -> tuple[int, bytes]:
    """GET health over the uwsgi protocol, as nginx's uwsgi_pass does: one packet of
    variables (``modifier1`` 0: WSGI), then the node writes an HTTP response and closes."""
    host = "localhost" if url.startswith("unix:") else urllib.parse.urlsplit(url).hostname or ""
    variables = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": HEALTH_PATH,
        "PATH_INFO": HEALTH_PATH,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "HTTP_HOST": host if ":" not in host else f"[{host}]",
        "REMOTE_ADDR": "127.0.0.1",
    }
    payload = b"".join(
        struct.pack("<H", len(part)) + part
        for pair in variables.items()
        for part in (pair[0].encode(), pair[1].encode("latin-1"))
    )
    packet = struct.pack("<BHB", 0, len(payload), 0) + payload
    connection = _connect(url, timeout)
    with connection:
        connection.sendall(packet)
        response = http.client.HTTPResponse(connection, method="GET")
        response.begin()
        return response.status, response.read(_MAX_BODY)


def _connect(url: str, timeout: float) -> socket.socket:
    if url.startswith("unix:"):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.settimeout(timeout)
            connection.connect(url[len("unix:") :])
        except BaseException:
            connection.close()
            raise
        return connection
    parsed = urllib.parse.urlsplit(url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=timeout)
