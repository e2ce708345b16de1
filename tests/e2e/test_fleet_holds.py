"""Cluster-wide holds (DESIGN section 13): three uWSGI nodes share a control database and the
tenants' PostgreSQL databases. A migration started on one node holds its tenant on all three
for exactly as long as it runs; two migrations of one tenant started on two nodes at once run
one after the other, and the second finds the tenant up to date.

The tenants run a copy of the notes app whose new migration waits for a file the test creates,
so "while the migration runs" is a moment the test controls, not a guess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import postgres

from .client import fetch
from .servers import ROOT, Tools, Uwsgi, free_port, wait_for

pytestmark = pytest.mark.e2e

HEAD = "29d17d897b21"
#: A migration that says when it starts and ends, and goes on only once its "go" file exists.
WAITING = '''"""a migration that waits for the test"""

import os
import time

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"


def upgrade() -> None:
    marker = os.environ["MIGRATION_MARKER"]
    with open(marker, "a") as f:
        f.write("start {revision}\\n")
    go = os.environ["MIGRATION_GO"] + "-{revision}"
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    op.add_column("notes", sa.Column("c_{revision}", sa.Integer(), nullable=True))
    with open(marker, "a") as f:
        f.write("end {revision}\\n")


def downgrade() -> None:
    op.drop_column("notes", "c_{revision}")
'''


class Fleet:
    """Three nodes, each with its own folder, tenants file and instance root."""

    def __init__(self, folder: Path, pg_prefix: str) -> None:
        self.folder = folder
        self.package = f"notes_{uuid.uuid4().hex[:8]}"
        self.apps = folder / "apps"
        shutil.copytree(ROOT / "tenants" / "notes", self.apps / self.package)
        self.marker = folder / "migrations.log"
        self.go = folder / "go"
        with postgres() as connection:
            connection.execute(f'CREATE DATABASE "{pg_prefix}control"')
        text = textwrap.dedent(
            f"""\
            version: 1
            server_names: [localhost]
            create_databases: true
            control_database: postgresql://postgres@127.0.0.1/{pg_prefix}control
            defaults:
              app: {self.package}
              database: postgresql://postgres@127.0.0.1/{pg_prefix}{{name}}
            tenants:
              acme: {{path: /acme}}
              globex: {{path: /globex}}
            """
        )
        self.files = []
        self.ports = []
        self.nodes: list[Uwsgi] = []
        for n in range(3):
            node = folder / f"node{n}"
            node.mkdir()
            (node / "tenants.yaml").write_text(text)
            self.files.append(node / "tenants.yaml")
            self.ports.append(free_port())
        for n in range(3):
            self.nodes.append(
                Uwsgi.start(
                    folder / f"node{n}" / "uwsgi",
                    self.files[n],
                    processes=1,
                    options=(
                        "--http-socket",
                        f"127.0.0.1:{self.ports[n]}",
                        "--pythonpath",
                        str(self.apps),
                    ),
                )
            )

    def statuses(self, tenant: str) -> list[int]:
        """What each node answers for the tenant's login page."""
        return [
            fetch(port, f"/{tenant}/auth/login", host="localhost").status for port in self.ports
        ]

    def add_migration(self, revision: str, down: str) -> None:
        versions = self.apps / self.package / "migrations" / "versions"
        (versions / f"{revision}.py").write_text(WAITING.format(revision=revision, down=down))

    def migrate(self, node: int, tenant: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{self.apps}",
            "MIGRATION_MARKER": str(self.marker),
            "MIGRATION_GO": str(self.go),
        }
        argv = [sys.executable, "-m", "dispatcher", "-f", str(self.files[node]), "migrate", tenant]
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def log(self) -> list[str]:
        return self.marker.read_text().splitlines() if self.marker.exists() else []

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def fleet(tools: Tools, tmp_path: Path, pg_prefix: str) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, pg_prefix)
    try:
        wait_for(lambda: fleet.statuses("acme") == [200] * 3, "acme on every node")
        assert fleet.statuses("globex") == [200] * 3
        yield fleet
    finally:
        fleet.stop()


def test_a_migration_on_one_node_holds_the_tenant_on_every_node(fleet: Fleet) -> None:
    fleet.add_migration("0002_waits", HEAD)
    migrate = fleet.migrate(0, "acme")
    try:
        wait_for(lambda: fleet.log() == ["start 0002_waits"], "the migration to start")
        # It started only once every node held acme: no node answers for it meanwhile.
        assert fleet.statuses("acme") == [503] * 3
        assert fleet.statuses("globex") == [200] * 3
        (fleet.go.parent / "go-0002_waits").touch()
        output, _ = migrate.communicate(timeout=120)
    finally:
        migrate.kill()
        migrate.wait()
    assert migrate.returncode == 0, output
    assert f"acme  {HEAD} -> 0002_waits" in output and " ok" in output
    # The command returned once every node served acme again.
    assert fleet.statuses("acme") == [200] * 3
    assert fleet.log() == ["start 0002_waits", "end 0002_waits"]


def test_two_migrations_of_one_tenant_from_two_nodes_take_turns(fleet: Fleet) -> None:
    fleet.add_migration("0002_waits", HEAD)
    first = fleet.migrate(0, "acme")
    second = None
    try:
        wait_for(lambda: fleet.log() == ["start 0002_waits"], "the first migration to start")
        second = fleet.migrate(1, "acme")  # waits for the first one's lock
        (fleet.go.parent / "go-0002_waits").touch()
        outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
                process.wait()
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert f"acme  {HEAD} -> 0002_waits" in outputs[0] and " ok" in outputs[0]
    assert "acme  0002_waits -> 0002_waits" in outputs[1] and "up to date" in outputs[1]
    assert fleet.log() == ["start 0002_waits", "end 0002_waits"]  # it ran once
    assert fleet.statuses("acme") == [200] * 3
