"""Ask every node of a fleet for its health, and whether they all serve one tenants file.

Each node's ``/_dispatcher/health`` carries ``tenants_file_sha256``, the hash of the tenants
file it last loaded (DESIGN section 13). A node is reached by HTTP(S) at its base URL, or by
the uwsgi protocol at its ``DISPATCHER_SOCKET`` (``uwsgi://10.0.0.11:3031``,
``unix:/run/dispatcher/uwsgi.sock``), the address nginx itself uses, so nodes need no HTTP
port of their own. The nodes are asked at once, each within its own deadline::

    healths = fleet_health(["uwsgi://10.0.0.11:3031", "uwsgi://10.0.0.12:3031"], timeout=5)
    problem = disagreement(healths)      # None when every node answered with the same file
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import ssl
import struct
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .rules import RESERVED_PREFIX

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["NodeHealth", "check_url", "disagreement", "fleet_health", "node_health"]

HEALTH_PATH = f"{RESERVED_PREFIX}/health"
#: A health answer is a few hundred bytes; anything past this is not the dispatcher's.
_MAX_BODY = 64 * 1024
_STATES = ("ready", "lazy", "failed", "maintenance")
#: What a dispatcher sends (``hashlib.sha256().hexdigest()``); anything else is another service.
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOT_HEALTH = "the answer is not a dispatcher's health (wrong address?)"
#: Followed as urllib follows them: an http:// node may send its clients to https://.
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10


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
    """Ask one node; any failure becomes the :attr:`NodeHealth.error` that says what went wrong.

    ``timeout`` is a deadline for the whole answer (connecting, headers, body): a node that
    trickles a byte at a time is as silent as one that never answers.
    """
    deadline = time.monotonic() + timeout
    try:
        status, body = _ask(url, deadline)
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
        return NodeHealth(url, error=_NOT_HEALTH)
    sha256 = data.get("tenants_file_sha256")
    if sha256 is None:
        return NodeHealth(url, error="its health has no tenants_file_sha256 (an older version?)")
    # Checked, not trusted: it goes to the operator's terminal, and two nodes sending the same
    # garbage must not count as serving the same file.
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        return NodeHealth(url, error=_NOT_HEALTH)
    tenants = {k: v for k, v in data["tenants"].items() if isinstance(v, int)}
    return NodeHealth(url, sha256, tenants)


def _reason(error: BaseException) -> str:
    """``connection refused`` rather than ``[Errno 111] Connection refused``."""
    if isinstance(error, socket.gaierror):
        return f"cannot resolve its host name ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    # http.client's errors quote the node (BadStatusLine is the line it sent).
    return _printable(str(error).strip()) or type(error).__name__


def _printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``), so that what a node sends cannot
    move the cursor or recolour the operator's terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (a :func:`time.monotonic` time); TimeoutError once it passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _ask(url: str, deadline: float) -> tuple[int, bytes]:
    """The status and body of the node's health, redirects followed, all of it by ``deadline``."""
    if url.startswith(("uwsgi:", "unix:")):
        with _connect(url, deadline) as connection:
            connection.sendall(_uwsgi_request(url))
            response = _response(connection, deadline)
            return response.status, _body(response)
    target = url.rstrip("/") + HEALTH_PATH
    for _ in range(_MAX_REDIRECTS + 1):  # the first request, then each redirect
        with _connect(target, deadline) as connection:
            _send_http_request(connection, target)
            response = _response(connection, deadline)
            location = response.getheader("Location")
            if response.status not in _REDIRECTS or location is None:
                return response.status, _body(response)
        target = urllib.parse.urljoin(target, location)
        if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
            break
    return response.status, b""


def _response(connection: socket.socket, deadline: float) -> http.client.HTTPResponse:
    """The node's answer on ``connection``, its status line and headers read by ``deadline``."""
    # http.client only calls ``makefile`` on what it is given, and _Answer has that.
    response = http.client.HTTPResponse(
        _Answer(connection, deadline),  # type: ignore[arg-type]
        method="GET",
    )
    response.begin()
    return response


def _body(response: http.client.HTTPResponse) -> bytes:
    """The body of a 200, at most _MAX_BODY bytes; with any other status, the status is enough."""
    return response.read(_MAX_BODY) if response.status == 200 else b""


class _Answer(io.RawIOBase):
    """A node's answer, read so that a deadline bounds all of it.

    A socket's timeout bounds each wait for bytes and starts again with every byte, so a node
    sending one space every half second would hold ``status`` as long as it liked. Each read
    here waits only for what is left until the deadline.
    """

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        super().__init__()
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._connection.settimeout(_left(self._deadline))
        return self._connection.recv_into(buffer)

    def makefile(self, mode: str) -> io.BufferedReader:
        """What :class:`http.client.HTTPResponse` reads from, as it would from a socket."""
        return io.BufferedReader(self)


def _send_http_request(connection: socket.socket, url: str) -> None:
    """GET ``url`` on a connection made to its host; http.client only writes the request."""
    parsed = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    client = kind(parsed.hostname or "", parsed.port)
    client.sock = connection
    selector = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    client.request("GET", selector, headers={"Connection": "close"})


def _uwsgi_request(url: str) -> bytes:
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
    return struct.pack("<BHB", 0, len(payload), 0) + payload


def _connect(url: str, deadline: float) -> socket.socket:
    """A connection to the node (TLS set up for https://), made before ``deadline``.

    Straight to the node: a $http_proxy set for the outside world must not be in the way.
    """
    if url.startswith("unix:"):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.settimeout(_left(deadline))
            connection.connect(url[len("unix:") :])
        except BaseException:
            connection.close()
            raise
        return connection
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    connection = socket.create_connection((parsed.hostname, port), timeout=_left(deadline))
    if parsed.scheme != "https":
        return connection
    try:
        # The ssl module bounds the whole handshake by the socket's timeout, not each wait.
        connection.settimeout(_left(deadline))
        context = ssl.create_default_context()
        return context.wrap_socket(connection, server_hostname=parsed.hostname)
    except BaseException:
        connection.close()
        raise
