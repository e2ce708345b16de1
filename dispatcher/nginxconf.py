"""The nginx configuration for a fleet of nodes serving one tenants file (DESIGN section 13).

:func:`nginx_config` renders ``templates/nginx.conf.j2`` from a loaded :class:`TenantSet`: the
server names of host tenants and ``server_names``, ``map``s that name the tenant of a request
(by host, then by path mount, as the dispatcher routes), and an upstream of the nodes keyed by
that name (``hash $dispatcher_tenant consistent``), so each node builds only its share of lazy
tenants and a node that is down is skipped at once. Only values validated by the loader or by
:func:`parse_node` reach the template, so nothing in it needs quoting::

    config = nginx_config(load_tenants("tenants.yaml"), ["10.0.0.11:3031", "10.0.0.12:3031"])
    Path("/etc/nginx/sites-available/dispatcher").write_text(config)
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jinja2

from .rules import HOST
from .tenant import TenantSet

__all__ = ["NginxConfigError", "Tls", "nginx_config", "parse_node"]

#: nginx's defaults for its hashes (``*_hash_max_size``, ``*_hash_bucket_size`` on x86-64).
_DEFAULT_MAX = {"server_names": 512, "map": 2048}
_DEFAULT_BUCKET = 64
#: Words a ``map`` reads as its own parameters, not as a value to match, unless escaped.
_MAP_WORDS = frozenset({"default", "hostnames", "include", "volatile"})
#: A path nginx reads as it is written: no quote, space, ``;``, ``{}`` or ``$`` (a variable).
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/@+=,-]*")
_PORT = re.compile(r"[0-9]{1,5}")
_IPV6_EXAMPLE = "[fd00::11]:3031"
_UNIX_EXAMPLE = "unix:/run/dispatcher/uwsgi.sock"
_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


class NginxConfigError(ValueError):
    """A setting that cannot become an nginx configuration; the message says how to fix it."""


@dataclass(frozen=True)
class Tls:
    """The certificate and key nginx presents for every name of the tenants file."""

    cert: str
    key: str

    def __post_init__(self) -> None:
        for option, path in (("--cert", self.cert), ("--key", self.key)):
            if not path.startswith("/"):
                raise NginxConfigError(
                    f"{option} '{path}' is not an absolute path: nginx would look for it in "
                    "its own folder. Give the full path, e.g. /etc/letsencrypt/live/"
                    "example.com/fullchain.pem"
                )
            if not _SAFE_PATH.fullmatch(path):
                raise NginxConfigError(
                    f"{option} '{path}' has characters nginx would misread (spaces, quotes, "
                    "';', '{', '}' or '$'); use a path of letters, digits and ./_-@+=,"
                )


def parse_node(text: str) -> str:
    """A node's address as nginx's ``server`` line takes it: ``HOST:PORT`` or ``unix:/PATH``.

    ``HOST`` is an IPv4 address, an IPv6 one in brackets or a DNS name; raises
    :class:`NginxConfigError` saying what is wrong otherwise.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/") or not _SAFE_PATH.fullmatch(path):
            raise NginxConfigError(
                f"--node '{text}': a unix socket needs an absolute path of letters, digits "
                f"and ./_-, like {_UNIX_EXAMPLE}"
            )
        return text
    host, colon, port = text.rpartition(":")
    if not colon or not host or "/" in text:
        raise NginxConfigError(
            f"--node '{text}' is not HOST:PORT (for example 10.0.0.11:3031, "
            f"{_IPV6_EXAMPLE} or {_UNIX_EXAMPLE})"
        )
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise NginxConfigError(f"--node '{text}': the port must be a number from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]:{int(port)}"
        except ValueError:
            raise NginxConfigError(f"--node '{text}': '{host}' is no IPv6 address") from None
    host = host.lower()
    if re.fullmatch(r"[0-9.]+", host):  # all digits: meant as an IPv4 address, never a name
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise NginxConfigError(f"--node '{text}': '{host}' is no IPv4 address") from None
    elif not HOST.fullmatch(host):
        raise NginxConfigError(
            f"--node '{text}': '{host}' is not an IP address or host name (an IPv6 address "
            f"goes in brackets: {_IPV6_EXAMPLE})"
        )
    return f"{host}:{int(port)}"


def nginx_config(tenant_set: TenantSet, nodes: Sequence[str], tls: Tls | None = None) -> str:
    """The text to put inside nginx's ``http {}`` for these tenants, served by these nodes.

    ``nodes`` are addresses as :func:`parse_node` returns them (at least one, each once).
    """
    if not nodes:
        raise NginxConfigError("name at least one node with --node HOST:PORT")
    repeated = sorted({n for n in nodes if nodes.count(n) > 1})
    if repeated:
        raise NginxConfigError(f"--node {', '.join(repeated)} given more than once")
    tenants = tenant_set.enabled
    hosts = sorted((host, t.name) for t in tenants for host in t.hosts)
    paths = [(t.path, t.name) for t in tenants if t.path is not None]
    depths: dict[int, list[tuple[str, str]]] = {}
    for path, name in sorted(paths):
        depths.setdefault(path.count("/"), []).append((path, name))
    server_names = sorted(tenant_set.server_names or ())
    # As the file says: without server_names, path mounts answer on any host, so the server
    # that passes requests on is nginx's default one; with them, unknown hosts get nginx's 404.
    any_host = tenant_set.server_names is None and bool(paths)
    names = [] if any_host else [h for h, _ in hosts] + server_names
    map_keys_of_hosts = [h for h, _ in hosts]
    map_keys_of_paths = [[p for p, _ in mounts] for mounts in depths.values()]
    context = {
        "file": os.path.basename(tenant_set.file),
        "sha256": tenant_set.tenants_file_sha256,
        "command": _command(tenant_set.file, nodes, tls),
        "counts": (len(tenants), len(paths), len(tenants) - len(paths)),
        "nodes": list(nodes),
        "hosts": [(_map_key(h), n) for h, n in hosts],
        "depths": sorted(depths.items()),
        "server_name_lines": "\n".join(f"    server_name {n};" for n in names or ["_"]),
        "any_host": any_host,
        "serves": any_host or bool(names),
        "forwarded": _forwarded(tenant_set),
        "proxy": tenant_set.proxy,
        "hashes": {
            # The catch-all's "_" shares the table of each port with the tenants' names.
            "server_names": _hash_size("server_names", [*names, "_"] if names else []),
            # One table per map; the directives cover them all.
            "map": _largest(_hash_size("map", k) for k in [map_keys_of_hosts, *map_keys_of_paths]),
        },
        "tls": tls,
    }
    return _environment().get_template("nginx.conf.j2").render(context)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # nginx syntax, not HTML; every value is validated instead
    )


def _command(file: str, nodes: Sequence[str], tls: Tls | None) -> str:
    """The command line that prints this configuration again."""
    words = [f"python -m dispatcher -f {file} nginx-config", *(f"--node {n}" for n in nodes)]
    if tls is not None:
        words += ["--tls", f"--cert {tls.cert}", f"--key {tls.key}"]
    return " ".join(words)


def _map_key(host: str) -> str:
    """A one-label host named like a ``map`` parameter must be escaped to be matched."""
    return "\\" + host if host in _MAP_WORDS else host


def _hash_size(kind: str, keys: Sequence[str]) -> tuple[int, int]:
    """``(max_size, bucket_size)`` for nginx's ``<kind>_hash_*``; ``(0, 0)``: the defaults do.

    nginx refuses to start when one key does not fit a bucket, and warns ("could not build
    optimal ...") when no table of at most ``max_size`` buckets holds every key. The
    defaults are kept whenever they work, so that a config with few names sets nothing that
    nginx.conf may set too; otherwise buckets get room for four of the longest keys, and the
    table up to eight times as many buckets as keys.
    """
    if not keys:
        return (0, 0)
    if _fits(keys, _DEFAULT_MAX[kind], _DEFAULT_BUCKET):
        return (0, 0)
    bucket = 128
    while bucket < 8 + 4 * _entry_size(max(keys, key=len)):
        bucket *= 2
    max_size = max(_DEFAULT_MAX[kind], 2 ** (8 * len(keys) - 1).bit_length())
    while not _fits(keys, max_size, bucket):  # never seen; doubling ends it regardless
        max_size *= 2
    return (max_size, bucket)


def _largest(sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
    pairs = list(sizes)
    return (max(m for m, _ in pairs), max(b for _, b in pairs))


def _entry_size(key: str) -> int:
    """Bytes a key takes in an nginx hash bucket: a pointer, its length, itself, 8-aligned."""
    return (8 + 2 + len(key) + 7) // 8 * 8


def _fits(keys: Sequence[str], max_size: int, bucket_size: int) -> bool:
    """Whether nginx's ``ngx_hash_init`` finds a table for ``keys`` (64-bit, as there).

    Each key goes to bucket ``hash % size`` (``hash = hash * 31 + byte`` over the
    lower-cased key); a bucket holds entries up to ``bucket_size`` less a closing pointer.
    Sizes are tried from a start estimate up to ``max_size``, as nginx does.
    """
    room = bucket_size - 8
    sizes = [_entry_size(key) for key in keys]
    if max(sizes) > room:
        return False
    hashes = []
    for key in keys:
        value = 0
        for byte in key.lower().encode():
            value = (value * 31 + byte) & 0xFFFFFFFFFFFFFFFF
        hashes.append(value)
    start = max(1, len(keys) // (room // 16))
    if max_size > 10000 and max_size // len(keys) < 100:
        start = max_size - 1000
    for size in range(start, max_size + 1):
        used = [0] * size
        for value, entry in zip(hashes, sizes, strict=True):
            used[value % size] += entry
            if used[value % size] > room:
                break
        else:
            return True
    return False


@dataclass(frozen=True)
class Forwarded:
    """One ``X-Forwarded-*`` header as nginx passes it: ``value`` ``""`` drops the client's."""

    field: str  # its proxy: field, "x_for"
    param: str  # its uwsgi parameter, "HTTP_X_FORWARDED_FOR"
    trusted: int  # how many proxies tenants.yaml trusts for it
    own: str  # nginx's own value for it
    value: str  # what nginx passes


#: ``proxy:`` field -> the uwsgi parameter of its header, and nginx's own value for it.
_FORWARDED = (
    ("x_for", "HTTP_X_FORWARDED_FOR", "$remote_addr"),
    ("x_proto", "HTTP_X_FORWARDED_PROTO", "$scheme"),
    ("x_host", "HTTP_X_FORWARDED_HOST", "$dispatcher_host"),
    ("x_port", "HTTP_X_FORWARDED_PORT", "$server_port"),
    ("x_prefix", "HTTP_X_FORWARDED_PREFIX", ""),
)


def _forwarded(tenant_set: TenantSet) -> list[Forwarded]:
    """Each header as ``proxy:`` trusts it.

    Trusted once: nginx's own value replaces the client's. Trusted more (a balancer in front
    of nginx): nginx appends its value to what that proxy sent, as ``ProxyFix`` expects (the
    template's maps; ``$proxy_add_x_forwarded_for`` for For). Not trusted: the client's
    header is never passed on.
    """
    proxy = tenant_set.proxy
    headers = []
    for field, param, own in _FORWARDED:
        trusted = getattr(proxy, field) if proxy is not None else 0
        if field == "x_prefix" and trusted > 1:
            raise NginxConfigError(
                f"{tenant_set.file}: proxy: x_prefix is {trusted}, but this nginx adds no "
                "X-Forwarded-Prefix of its own (it serves every tenant at the root of its "
                "host), so the app would read the wrong one. Set x_prefix to 0 (or 1), or "
                "write the nginx configuration by hand"
            )
        if trusted == 0 or not own:
            value = ""
        elif trusted == 1:
            value = own
        elif field == "x_for":
            value = "$proxy_add_x_forwarded_for"
        else:
            value = "$dispatcher_forwarded_" + field[2:]
        headers.append(Forwarded(field, param, trusted, own, value))
    return headers
