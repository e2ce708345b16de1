"""``archive NAME`` and ``list --archived`` on SQLite: a tenant that left the file is backed up,
then its instance folder moved to ``<instance_root>/.archive/``; nothing is ever deleted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .helpers import (
    SQLITE_TENANTS,
    Tenants,
    archive_path,
    cli,
    failed_cleanly,
    items,
    manifest,
    state,
)

WriteTenants = Callable[..., Path]


def retire(tenants: Tenants, line: str, replacement: str) -> None:
    """Edit the tenants file as an operator does before archiving."""
    text = tenants.file.read_text()
    assert line in text
    tenants.file.write_text(text.replace(line, replacement))


def remove(tenants: Tenants, name: str) -> None:
    """Take tenant ``name``'s line out of the tenants file."""
    lines = tenants.file.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.strip().startswith(f"{name}:")]
    assert len(kept) == len(lines) - 1
    tenants.file.write_text("".join(kept))


def test_a_disabled_tenant_is_backed_up_then_moved_aside(tenants: Tenants) -> None:
    tenants.add("globex", "g1", "g2")
    (tenants.folder("globex") / "config.py").write_text("X = 1\n")
    tenants.close()
    retire(tenants, "globex: {path: /globex}", "globex: {path: /globex, enabled: false}")
    root = Path(tenants.set.instance_root)

    result = cli(tenants.file, "archive", "globex")

    assert result.exit_code == 0, result.output
    moved = root / ".archive" / "globex"
    assert f"globex: instance folder moved to {moved}" in result.output
    assert not (root / "globex").exists()
    assert items(moved / "app.db") == ["g1", "g2"]
    assert (moved / "config.py").read_text() == "X = 1\n"
    backup = archive_path(result, "globex")
    assert backup.parent == root / ".backups" and backup.name.endswith("-archived.tar.gz")
    assert manifest(backup)["tables"] == {"item": 2}
    record = json.loads((moved / ".archived.json").read_text())
    assert record["tenant"] == "globex" and record["backup"] == str(backup)
    assert record["app"] == "tests.apps.echo" and record["database_dropped"] is False

    listed = cli(tenants.file, "list", "--archived")
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split() == ["NAME", "ARCHIVED", "APP", "DATABASE", "BACKUP", "FOLDER"]
    assert row.split()[0] == "globex" and str(backup) in row and str(moved) in row


def test_a_removed_tenant_is_archived_from_the_defaults_and_can_come_back(
    tenants: Tenants,
) -> None:
    tenants.add("umbrella", "u")
    tenants.close()
    remove(tenants, "umbrella")

    result = cli(tenants.file, "archive", "umbrella")

    assert result.exit_code == 0, result.output
    backup = archive_path(result, "umbrella")
    assert manifest(backup)["app"] == "tests.apps.echo"
    # Back in the file (as a new customer would be), its archive restores into it.
    retire(tenants, "  initech:", "  umbrella: {path: /umbrella}\n  initech:")
    restored = cli(tenants.file, "restore", str(backup))
    assert restored.exit_code == 0, restored.output
    assert items(tenants.folder("umbrella") / "app.db") == ["u"]


def test_archiving_twice_keeps_both(tenants: Tenants) -> None:
    tenants.close()
    remove(tenants, "acme")
    assert cli(tenants.file, "archive", "acme").exit_code == 0
    tenants.folder("acme").mkdir()
    (tenants.folder("acme") / "notes.txt").write_text("second life")
    assert cli(tenants.file, "archive", "acme").exit_code == 0
    archive = Path(tenants.set.instance_root) / ".archive"
    assert sorted(p.name for p in archive.iterdir()) == ["acme", "acme-2"]
    assert (archive / "acme-2" / "notes.txt").read_text() == "second life"
    listed = cli(tenants.file, "list", "--archived").output.splitlines()
    assert [line.split()[0] for line in listed[1:]] == ["acme", "acme"]


def test_list_archived_when_there_is_none(tenants: Tenants) -> None:
    result = cli(tenants.file, "list", "--archived")
    assert result.exit_code == 0
    assert result.output == f"No archived tenants in {tenants.set.instance_root}.\n"


def test_an_enabled_tenant_is_not_archived(tenants: Tenants) -> None:
    tenants.add("acme", "a")
    root = Path(tenants.set.instance_root)
    before = state(root)
    result = cli(tenants.file, "archive", "acme")
    failed_cleanly(result, 1, "acme: not archived: tenant 'acme' is enabled", "enabled: false")
    assert state(root) == before


def test_unknown_names_are_usage_mistakes(tenants: Tenants, write_tenants: WriteTenants) -> None:
    root = Path(tenants.set.instance_root)
    before = state(root)
    for name in ("nosuch", "..", "../instance"):
        result = cli(tenants.file, "archive", name)
        failed_cleanly(result, 2, f"No tenant named '{name}'", "nothing to archive")
    assert state(root) == before
    assert SQLITE_TENANTS  # the file those tenants come from


def test_a_removed_tenant_the_defaults_cannot_describe_is_a_clear_error(
    write_tenants: WriteTenants, tmp_path: Path
) -> None:
    """The defaults' database is main's: a removed tenant made from them would share it."""
    shared = f"sqlite:///{tmp_path}/main.db"
    file = write_tenants(f"""
        version: 1
        defaults: {{app: tests.apps.echo, database: "{shared}"}}
        tenants:
          main: {{path: /main}}
          old: {{path: /old, database: "sqlite:///{tmp_path}/old.db"}}
    """)
    assert cli(file, "init-db", "--all").exit_code == 0
    file.write_text("".join(ln for ln in file.read_text().splitlines(True) if "old:" not in ln))
    root = tmp_path / "instance"
    before = state(root)

    result = cli(file, "archive", "old")

    failed_cleanly(
        result, 1, "old: not archived: tenant 'old' is not in", "main", "'enabled: false'"
    )
    assert state(root) == before
