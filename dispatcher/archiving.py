"""Archive a tenant that left the file: back it up, then move its instance folder aside.

Removing a tenant from tenants.yaml (or ``enabled: false``) never deletes anything; its folder
and database stay where they were. :func:`archive_tenant` is how an operator puts them away:
the tenant is held (a worker that still serves it answers 503), backed up into
``<instance_root>/.backups/`` (``...-archived.tar.gz``), its PostgreSQL database dropped only
when asked, and its instance folder moved to ``<instance_root>/.archive/<name>/`` with a
record (``.archived.json``) that :func:`archived` lists. A tenant removed from the file is
described by the file's ``defaults`` (its app, its database URL)::

    tenant = tenant_set["hooli"] if "hooli" in names else removed_tenant(tenant_set, "hooli")
    done = archive_tenant(tenant_set, tenant, drop_database=False)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from . import backup_postgres as postgres
from . import backup_sqlite as sqlite
from .backup import NothingToBackUp, Taken, backend, backup_tenant, default_folder
from .backup_archive import create, disk_error
from .errors import BackupError
from .holds import held
from .loader import load_tenants
from .problems import ConfigError
from .restore_files import one_at_a_time
from .tenant import TenantConfig, TenantSet

#: Under the instance root: the folders of archived tenants.
ARCHIVE_FOLDER = ".archive"
#: In each archived folder: what was archived, when, and where its backup is.
RECORD = ".archived.json"


@dataclass(frozen=True)
class Archived:
    """What archiving a tenant did."""

    tenant: str
    folder: str
    backup: Taken | None
    database: str
    dropped: bool
    notes: tuple[str, ...] = ()


def removed_tenant(tenant_set: TenantSet, name: str) -> TenantConfig:
    """Tenant ``name``, not in the file, as the file's ``defaults`` would make it (disabled)."""
    data = yaml.safe_load(tenant_set.text)
    tenants = data.get("tenants") or {}
    # A mount no other tenant can have: it is never served, only described.
    tenants[name] = {"enabled": False, "hosts": [f"{name}.archived.invalid"]}
    data["tenants"] = tenants
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        return load_tenants(tenant_set.file, text=text, instance_root=tenant_set.instance_root)[
            name
        ]
    except ConfigError as e:  # located in a text made here: say what, not where
        why = "; ".join(p.message for p in e.problems)
        raise BackupError(
            f"tenant '{name}' is not in {tenant_set.file}, and the app and database its "
            f"'defaults:' would give it cannot be used ({why}). Put it back in the file with "
            f"'enabled: false' and its own app and database, then archive it"
        ) from None


def archive_tenant(
    tenant_set: TenantSet, tenant: TenantConfig, *, drop_database: bool = False
) -> Archived:
    """Back the tenant up, drop its PostgreSQL database if asked, move its folder aside."""
    if tenant.enabled:
        raise BackupError(
            f"tenant '{tenant.name}' is enabled ({tenant.source}): only a tenant removed from "
            "the file or set to 'enabled: false' is archived. Change the file first"
        )
    kind = backend(tenant)
    if not os.path.isdir(tenant.instance_path):
        raise BackupError(f"tenant '{tenant.name}' has no instance folder {tenant.instance_path}")
    notes = []
    with one_at_a_time(tenant_set.instance_root), held(tenant_set, tenant.name, "archiving"):
        try:
            taken = backup_tenant(
                tenant, default_folder(tenant_set.instance_root), label="archived"
            )
        except NothingToBackUp:
            taken = None
        dropped = kind == "postgresql" and drop_database
        if dropped:
            postgres.drop_database(tenant.database_uri)
        database = _shown(tenant.database_uri)
        if kind == "sqlite":
            path = sqlite.database_path(tenant.database_uri)
            inside = path is not None and path.startswith(tenant.instance_path + os.sep)
            if inside:
                database += " (moved with the folder)"
            elif path is not None and os.path.exists(path):
                notes.append(f"its database {path} is outside the instance folder: left there")
        destination = _free(os.path.join(tenant_set.instance_root, ARCHIVE_FOLDER, tenant.name))
        try:
            os.makedirs(os.path.dirname(destination), mode=0o700, exist_ok=True)
            os.rename(tenant.instance_path, destination)
        except OSError as e:
            raise disk_error(e, f"cannot move {tenant.instance_path} to {destination}") from e
    record = {
        "tenant": tenant.name,
        "app": tenant.app,
        "database": database,
        "database_dropped": dropped,
        "archived_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backup": taken.path if taken else None,
    }
    try:
        with create(os.path.join(destination, RECORD)) as f:
            f.write(json.dumps(record, indent=2).encode())
    except OSError as e:  # archived all the same; only `list --archived` will know less
        notes.append(f"could not write {RECORD} ({e.strerror}); the tenant is archived anyway")
    return Archived(tenant.name, destination, taken, database, dropped, tuple(notes))


def archived(instance_root: str) -> list[dict[str, Any]]:
    """The records of the archived tenants, oldest first, each with its ``folder``."""
    folder = os.path.join(instance_root, ARCHIVE_FOLDER)
    records = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name, RECORD)
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = {"tenant": name, "archived_at": "?"}
        records.append({**record, "folder": os.path.join(folder, name)})
    return sorted(records, key=lambda r: (str(r.get("archived_at")), r["folder"]))


def _free(path: str) -> str:
    """``path``, or ``path-2``... if a tenant of that name was archived before."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


def _shown(uri: str) -> str:
    return make_url(uri).render_as_string(hide_password=True)
