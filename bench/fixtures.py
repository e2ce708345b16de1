"""Tenants files for the wall-clock benchmarks of issue 15: notes tenants whose databases exist.

The notes app (tenants/notes) is the demo app: a real schema under Flask-Migrate, at head. A
first tenant is built by the dispatcher (its database created at head); the others get copies
of that database and a secret key each, as after a first deployment, so building or migrating
them does no schema work::

    file = notes_tenants(work / "1000", 1000)        # 1,000 lazy path tenants, at head
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path


def notes_tenants_file(folder: Path, count: int, *, lazy: bool = True) -> Path:
    """``folder/tenants.yaml``: ``count`` notes tenants by path; nothing else is created."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "tenants.yaml"
    lines = [
        "version: 1",
        "server_names: [127.0.0.1]",
        f"instance_root: {folder / 'instance'}",
        f"defaults: {{app: tenants.notes, mount: path, lazy: {'true' if lazy else 'false'}}}",
        "tenants:",
    ]
    lines += [f"  t{i:05d}:" for i in range(count)]
    file.write_text("\n".join(lines) + "\n")
    return file


def notes_tenants(folder: Path, count: int, *, lazy: bool = True) -> Path:
    """``folder/tenants.yaml``: ``count`` notes tenants by path, each database at head."""
    from dispatcher import build_app, load_tenants
    from dispatcher.database import dispose_engines

    file = notes_tenants_file(folder, count, lazy=lazy)
    tenant_set = load_tenants(file)
    first = tenant_set.tenants[0]
    dispose_engines(build_app(first))  # created at head, by the dispatcher
    template = Path(first.instance_path) / "app.db"
    for tenant in tenant_set.tenants[1:]:
        instance = Path(tenant.instance_path)
        instance.mkdir(mode=0o700)
        shutil.copyfile(template, instance / "app.db")
        key = instance / "secret_key"
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
    return file
