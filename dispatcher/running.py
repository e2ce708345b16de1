"""The tenants file as a server last loaded it, for ``diff`` and for respawned workers.

Every load the server makes is recorded atomically under the instance root
(:data:`RUNNING_FILE`), and under uWSGI with the master's pid beside it. ``python -m dispatcher
diff`` compares an edited file with it; a uWSGI worker respawned after an invalid edit (which
the live reload refused) serves it rather than fail to start, which with ``need-app`` would end
the whole server (:func:`served_before`)::

    record_running(tenant_set)
    running_text(tenant_set)         # the recorded content, or None
"""

from __future__ import annotations

import logging
import os
import threading

from .loader import load_tenants
from .problems import ConfigError
from .tenant import TenantSet
from .uwsgi_api import uwsgi_api
from .yamlfile import parse_yaml, read_text

log = logging.getLogger("dispatcher")

#: A copy, under the instance root, of the tenants file as the server last loaded it:
#: ``python -m dispatcher diff`` compares the edited file with it.
RUNNING_FILE = ".running-tenants.yaml"
#: Beside it, under uWSGI: the pid of the master whose workers served it (see
#: :func:`served_before`).
RUNNING_MASTER_FILE = ".running-tenants.master"


def record_running(tenant_set: TenantSet) -> None:
    """Keep a copy of the file being served, for ``diff``; atomic, and only if it changed.

    Written only into an instance root that exists: loading a file alone creates nothing.
    """
    if not os.path.isdir(tenant_set.instance_root):
        return
    master = _uwsgi_master_pid()
    for name, text in (
        (RUNNING_FILE, tenant_set.text),
        (RUNNING_MASTER_FILE, f"{master}\n" if master else None),
    ):
        path = os.path.join(tenant_set.instance_root, name)
        if text is None or _read(path) == text:
            continue
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(temporary, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            os.replace(temporary, path)
        except OSError as e:  # a read-only instance root costs only `diff` its default
            log.warning("cannot record the running tenants file in %s: %s", path, e)


def served_before(file: str) -> TenantSet | None:
    """The tenant set this uWSGI server's workers served, for a worker it (re)spawns.

    A worker that is respawned (recycled, killed, chain-reloaded) after an invalid edit that
    the live reload refused must not fail to start, which with ``need-app`` would end the whole
    server: it serves what its siblings serve. Only for a master that recorded that copy
    itself; a fresh start with a bad file still fails.
    """
    master = _uwsgi_master_pid()
    if master is None:
        return None
    instance_root = os.path.join(os.path.dirname(os.path.abspath(file)), _instance_root(file))
    recorded = _read(os.path.join(instance_root, RUNNING_MASTER_FILE))
    text = _read(os.path.join(instance_root, RUNNING_FILE))
    if recorded != f"{master}\n" or text is None:
        return None
    try:
        return load_tenants(file, text=text)
    except ConfigError:  # e.g. an environment variable it needs is gone
        return None


def _instance_root(file: str) -> str:
    """The broken file's ``instance_root`` if it can still be read, else the default.

    Read within the same bounds as any tenants file: the file may be hostile (issue 11).
    """
    text, _ = read_text(file)
    data = parse_yaml(text, file, os.environ).data if text is not None else None
    value = data.get("instance_root") if isinstance(data, dict) else None
    return value if isinstance(value, str) else "instance"


def _uwsgi_master_pid() -> int | None:
    uwsgi = uwsgi_api()
    if uwsgi is None:  # not running under uWSGI
        return None
    return int(uwsgi.masterpid()) or None


def running_text(tenant_set: TenantSet) -> str | None:
    """The tenants file as a server last loaded it, if one recorded it."""
    return _read(os.path.join(tenant_set.instance_root, RUNNING_FILE))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # exact: its sha256 is the file's
            return f.read()
    except OSError:
        return None
