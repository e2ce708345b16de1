"""The single-value rules of tenants.yaml: names, paths, hosts, app modules, database URLs.

Pure functions, each answering "what is wrong with this value and how to fix it" as a
:class:`Fault` (or ``None``), so :mod:`dispatcher.tenantentry` and :mod:`dispatcher.loader`
can report it at the value's place in the file, and can apply the same rule, quietly, to the
fields of a tenant that has other errors (its path still takes part in the clash checks)::

    path_fault("/Acme/")      # Fault("must not end with '/'", "Write '/acme'")
    host_fault("a.com:80")    # Fault("'a.com:80' is not a host name", "Write the bare host ...")
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pkgutil
import re
import sys
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any, NamedTuple

from sqlalchemy.engine import URL, make_url

#: Paths under this prefix belong to the dispatcher on every host.
RESERVED_PREFIX = "/_dispatcher"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
NAME = re.compile(_LABEL)
HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
APP = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*)?")
_SEGMENT = re.compile(r"[a-z0-9._-]+")
#: Valid paths whose segments each start with a letter or digit (so none is "." or "..",
#: nor the reserved prefix's): the rest are looked at rule by rule.
_PLAIN_PATH = re.compile(r"(?:/[a-z0-9][a-z0-9._-]*)+")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}


class Fault(NamedTuple):
    """What is wrong with a value, and how to fix it."""

    message: str
    fix: str
    #: Where inside the value checked: ``("SQLALCHEMY_BINDS",)`` in a ``config``.
    field: tuple[str, ...] = ()


def path_fault(path: str) -> Fault | None:
    """Why a path mount is invalid, and how to fix it; ``None`` if it is fine."""
    if _PLAIN_PATH.fullmatch(path):  # most paths, in one match: "/acme", "/eu/acme-2"
        return None
    segments = path.split("/")[1:]
    if not path.startswith("/"):
        return Fault("must start with '/'", _path_fix(path))
    if path == "/":
        return Fault("is the root", "Give it a segment, like '/acme'; a whole host is 'hosts:'")
    if path.endswith("/"):
        return Fault("must not end with '/'", _path_fix(path))
    if path != path.lower():
        return Fault("must be lower-case", _path_fix(path))
    if "" in segments:
        return Fault("has an empty segment ('//')", _path_fix(path))
    if "." in segments or ".." in segments:
        return Fault("has a '.' or '..' segment", _path_fix(path))
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        return Fault(
            "has characters outside a-z, 0-9, '.', '_' and '-'", "Use only those characters"
        )
    if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
        return Fault(
            f"is under '{RESERVED_PREFIX}', reserved for the dispatcher", "Choose another path"
        )
    return None


def _path_fix(path: str) -> str:
    """How to fix an invalid path: the path cleaned up (computed only for invalid ones)."""
    clean = [s for s in path.lower().split("/") if s not in ("", ".", "..")]
    return f"Write '/{'/'.join(clean)}'" if clean else "Write a path such as '/acme'"


def normalise_host_name(raw: str) -> str:
    """Host names match case-insensitively and without the root's trailing dot."""
    return raw.lower().removesuffix(".")


def host_fault(raw: str) -> Fault | None:
    """Why a host name (for ``hosts``, ``base_domain``, ...) is invalid; ``None`` if fine."""
    host = normalise_host_name(raw)
    if ":" in host or "/" in host:
        return Fault(
            f"'{raw}' is not a host name",
            "Write the bare host, without scheme, port or path: hosts match whatever the port",
        )
    if "*" in host:
        return Fault(
            f"'{raw}' is a wildcard",
            "List each host, or use 'subdomain:' with 'base_domain' for *.domain tenants",
        )
    if len(host) > 253 or not HOST.fullmatch(host):
        return Fault(
            f"'{raw}' is not a valid host name",
            "Use DNS labels of letters, digits and '-', joined by dots",
        )
    return None


def database_key(url: URL) -> tuple[Any, ...]:
    """What makes two URLs the same database, whatever the driver, case or default port."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return (backend, os.path.normpath(url.database) if url.database else url.database)
    # The query's connection arguments win over the URL's own parts (SQLAlchemy passes them
    # to the driver): `postgresql://db/a?dbname=b` is database b.
    query = {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items() if v}
    host = query.get("host", url.host)
    port = query.get("port", url.port) or _DEFAULT_PORTS.get(backend)
    database = query.get("dbname", query.get("database", url.database))
    return (backend, _server(host), str(port) if port else port, database)


def _server(host: str | None) -> str | None:
    """The host a URL names, with every name of this machine's own server made one: loopback
    addresses, ``localhost``, a Unix socket folder and no host at all reach the same server
    (told apart, if at all, by the port)."""
    if not host or host.startswith("/"):
        return "local"
    host = host.lower().strip("[]")
    if host in ("localhost", "localhost.localdomain", "::1") or host.startswith("127."):
        return "local"
    return host


#: Flask config keys a tenants file may not set: the dispatcher owns each tenant's database
#: (DESIGN 4). Each with how to do what it was meant for.
_OWNED_CONFIG = {
    "SQLALCHEMY_DATABASE_URI": "Set the tenant's 'database:' instead",
    "SQLALCHEMY_BINDS": "Remove it: a tenant has one database, set with 'database:'",
}


def config_faults(config: Any) -> list[Fault]:
    """Keys of a tenant's (or the defaults') ``config`` that could reach another tenant's
    database, each a :class:`Fault` whose ``field`` is the key's path in ``config``."""
    if not isinstance(config, dict):
        return []
    faults = [
        Fault(
            f"'{key}' is not allowed in config: the dispatcher sets each tenant's database",
            fix,
            (key,),
        )
        for key, fix in _OWNED_CONFIG.items()
        if key in config
    ]
    options = config.get("SQLALCHEMY_ENGINE_OPTIONS")
    if not isinstance(options, dict):
        return faults
    for option, fix in _CONNECTING_OPTIONS.items():
        if option in options:
            faults.append(
                Fault(
                    f"the engine option '{option}' in config can point the tenant at another "
                    "database (whatever its URL says)",
                    fix,
                    ("SQLALCHEMY_ENGINE_OPTIONS", option),
                )
            )
    return faults


#: Engine options that decide what a connection reaches, past the URL the dispatcher checks.
#: (A tenants file cannot hold a function, the pytest plugin's app_config fixture can.)
_CONNECTING_OPTIONS = {
    "connect_args": "Put driver options in the 'database:' URL's query, e.g. '?sslmode=require'",
    "creator": "Remove it: the dispatcher's URL makes the connections",
    "async_creator": "Remove it: the dispatcher's URL makes the connections",
    "pool": "Remove it: set pool sizes with pool_size/max_overflow instead",
}


def plain_sqlite_file(url: str, instance_path: str) -> str | None:
    """The absolute file of a plain ``sqlite:///path`` URL (no query), else ``None``.

    Relative paths are relative to the instance folder, as in Flask-SQLAlchemy.
    """
    if not url.startswith("sqlite:///") or "?" in url or len(url) == len("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    if path == ":memory:":
        return None
    if path.startswith("/") and "/." not in path and "//" not in path and path[-1] != "/":
        return path  # absolute and already normal: most ({instance_path}/app.db)
    return os.path.normpath(os.path.join(instance_path, path))


def absolute_sqlite(url: URL, instance_path: str) -> URL:
    """A relative SQLite path made relative to the instance folder, as Flask-SQLAlchemy does."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return url.set(database=os.path.join(instance_path, url.database or ""))
    return url


def with_default_driver(url: URL) -> URL:
    """``postgresql://`` names no driver: use psycopg (3), the one this project installs."""
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url


def parse_database_url(url: str) -> URL | None:
    """The parsed SQLAlchemy URL, or ``None`` if ``url`` is not one."""
    try:
        return make_url(url)
    except Exception:  # ArgumentError, ValueError: any unparseable text
        return None


def find_module(module: str, root: str) -> str | None:
    """``None`` if ``module`` can be imported from ``root``, else why not (with a guess)."""
    add_import_root(root)
    if find_spec_without_import(module) is not None:
        return None
    parent, _, leaf = module.rpartition(".")
    hint = ""
    parent_spec = find_spec_without_import(parent) if parent else None
    if parent_spec is not None and parent_spec.submodule_search_locations:
        siblings = [m.name for m in pkgutil.iter_modules(parent_spec.submodule_search_locations)]
        close = difflib.get_close_matches(leaf, siblings, n=1)
        hint = f" (did you mean '{parent}.{close[0]}'?)" if close else ""
    return f"app module '{module}' was not found{hint}"


def find_spec_without_import(module: str) -> ModuleSpec | None:
    """Find a module's spec without running any package's ``__init__``.

    ``importlib.util.find_spec("pkg.app")`` imports ``pkg`` first; here each level is looked up
    in its parent's folders instead, so checking a file never runs tenant code.
    """
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level lookup imports nothing
        for depth in range(2, len(parts) + 1):
            locations = spec.submodule_search_locations if spec is not None else None
            if not locations:
                return None
            name = ".".join(parts[:depth])
            loaded = sys.modules.get(name)
            if loaded is not None and loaded.__spec__ is not None:
                spec = loaded.__spec__
            else:
                spec = PathFinder.find_spec(name, list(locations))
    except (ImportError, ValueError):
        return None
    return spec


def add_import_root(root: str) -> None:
    """Make the tenants file's folder importable, so ``tenants.notes`` resolves from any cwd."""
    if root not in sys.path:
        sys.path.insert(0, root)


def without_secrets(url: str | URL) -> str:
    """A database URL as messages show it: its password, and any ``?password=``-like query
    value, hidden."""
    url = make_url(url)
    query = {k: "***" if "password" in k.lower() else v for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)
