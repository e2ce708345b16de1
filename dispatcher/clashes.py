"""What must be unique across tenants: paths, hosts, databases, literal SECRET_KEYs.

Reading a tenant's entry (:mod:`dispatcher.tenantentry`) yields a :class:`Claim` for each thing
it takes that no other tenant may have, also for a tenant with other errors, so every clash is
reported in the same run. :func:`report_clashes` then compares the claims of the whole file and
adds a problem to the document for each clash (the later tenant's, naming the earlier one)::

    claims = [Claim("path", "/acme", "/acme", "acme", "tenants.yaml:7", at, 8), ...]
    report_clashes(doc, claims, server_names=frozenset({"app.example.com"}))
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import NamedTuple

from .problems import Path
from .yamlfile import YamlDocument


class Claim(NamedTuple):
    """One thing one tenant takes that no other tenant may have."""

    #: ``"path"``, ``"host"``, ``"database"`` or ``"SECRET_KEY"``: values clash within a kind.
    kind: str
    #: What is compared: the path, the host, :func:`~dispatcher.rules.database_key`, the key.
    key: Hashable
    #: The value as messages quote it; ``None``: never shown (a SECRET_KEY).
    shown: str | None
    tenant: str
    #: Where the tenant is defined (``"tenants.yaml:7"``), for the other tenant's message.
    source: str
    #: The field a clash is reported on, and its line.
    where: Path
    line: int

    @property
    def what(self) -> str:
        """``"path '/acme'"``, ``"SECRET_KEY (not shown)"``: the claim in a message."""
        return f"{self.kind} (not shown)" if self.shown is None else f"{self.kind} '{self.shown}'"


def report_clashes(
    doc: YamlDocument, claims: Iterable[Claim], server_names: frozenset[str] | None
) -> None:
    """No two tenants share a path, a host, a database or a literal SECRET_KEY; no path
    mount contains another; no host is also a server name."""
    first: dict[str, dict[Hashable, Claim]] = {"path": {}}
    for claim in claims:
        other = first.setdefault(claim.kind, {}).setdefault(claim.key, claim)
        if other.tenant != claim.tenant:  # a tenant may name one host twice (subdomain, hosts)
            doc.problem(
                claim.where,
                f"duplicate {claim.what}: tenant '{other.tenant}' ({other.source}) has it too",
                f"Give each tenant its own {claim.kind}",
                line=claim.line,
            )
        if claim.kind == "host" and server_names and claim.key in server_names:
            doc.problem(
                claim.where,
                f"host '{claim.shown}' is also in server_names, where path mounts answer",
                "Remove it from one of the two",
                line=claim.line,
            )
    _report_nested_paths(doc, first["path"])


def _report_nested_paths(doc: YamlDocument, paths: dict[Hashable, Claim]) -> None:
    """No path mount may be inside another (``/a/b`` under ``/a``)."""
    for claim in paths.values():
        path = str(claim.key)
        parent = path.rpartition("/")[0]
        while parent:
            if parent in paths:
                doc.problem(
                    claim.where,
                    f"path '{path}' is inside '{parent}', the mount of tenant "
                    f"'{paths[parent].tenant}'",
                    "Mounts cannot nest: use a sibling path such as "
                    f"'{parent}-{path[len(parent) + 1 :].replace('/', '-')}'",
                    line=claim.line,
                )
                break
            parent = parent.rpartition("/")[0]
