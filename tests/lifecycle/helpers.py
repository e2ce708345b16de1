"""What the backup, restore, archive and clone tests share.

:func:`cli` runs ``python -m dispatcher`` in-process; :func:`state` captures everything a
command that fails must leave as it was (compare before and after); :class:`Tenants` writes
items through a real dispatcher and reads them back from the databases.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from werkzeug.test import Client

from dispatcher import Dispatcher, TenantSet, load_tenants
from dispatcher.backup_sqlite import is_sqlite
from dispatcher.cli import main

HOST = {"Host": "localhost"}

#: Echo tenants on SQLite (the echo app stores items), one of another app, one disabled.
SQLITE_TENANTS = """
    version: 1
    server_names: [localhost]
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {path: /acme}
      globex: {path: /globex}
      umbrella: {path: /umbrella}
      initech: {path: /initech, app: tenants.tasks}
      hooli: {path: /hooli, enabled: false}
"""


def cli(file: Path, *args: str) -> Result:
    """``python -m dispatcher -f FILE ARGS...`` in-process, in a throwaway context."""
    argv = ["-f", str(file), *args]
    return contextvars.copy_context().run(CliRunner().invoke, main, argv)  # type: ignore[arg-type]


def failed_cleanly(result: Result, code: int, *words: str) -> None:
    """Exit ``code``, one message naming ``words``, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


class Tenants:
    """A tenants file served in-process: items written through the echo app's route."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.set: TenantSet = load_tenants(file)
        # Its background work (holds, reloads) runs when a request is made, as within a second.
        self.dispatcher = Dispatcher(self.set, background=False)
        self.client = Client(self.dispatcher)

    def add(self, tenant: str, *texts: str) -> None:
        self.dispatcher.tick()
        for text in texts:
            response = self.client.post(f"/{tenant}/items", data={"text": text}, headers=HOST)
            assert response.status_code == 201, response.text

    def served(self, tenant: str) -> list[str]:
        """The items as the running dispatcher serves them."""
        self.dispatcher.tick()
        response = self.client.get(f"/{tenant}/items", headers=HOST)
        assert response.status_code == 200, response.text
        return list(response.json["items"])  # type: ignore[index]

    def folder(self, tenant: str) -> Path:
        return Path(self.set.instance_root) / tenant

    def close(self) -> None:
        self.dispatcher.close()


def items(database: Path) -> list[str]:
    """The item texts in a SQLite database, read directly, in id order."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return [row[0] for row in db.execute("SELECT text FROM item ORDER BY id")]


def state(root: Path, *, leave_out: tuple[str, ...] = (".maintenance",)) -> dict[str, Any]:
    """Every path under ``root`` with its content; SQLite databases by their rows and schema
    (their bytes change with checkpoints), their -wal/-shm files left out, as is the holds
    folder (bookkeeping of the hold itself)."""
    found: dict[str, Any] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in leave_out or path.name.endswith(("-wal", "-shm")):
            continue
        if path.is_dir():
            found[str(relative)] = "folder"
        elif is_sqlite(str(path)):
            with contextlib.closing(sqlite3.connect(path)) as db:
                found[str(relative)] = list(db.iterdump())
        else:
            found[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def manifest(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return dict(json.loads(member.read()))


def archive_path(result: Result, tenant: str) -> Path:
    """The archive a ``backup`` run printed for ``tenant``."""
    for line in result.output.splitlines():
        if line.startswith(f"{tenant}: /"):
            return Path(line.split()[1])
    raise AssertionError(f"no archive printed for {tenant}:\n{result.output}")


def rewrite(archive: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of ``archive`` with members replaced (or dropped, ``None``) as they are, no
    checksum recomputed: what corruption or tampering looks like."""
    with tarfile.open(archive) as tar, tarfile.open(out, "w:gz") as new:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name in change:
                replacement = change[member.name]
                if replacement is None:
                    continue
                data = replacement
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    return out
