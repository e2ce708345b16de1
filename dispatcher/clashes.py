"""What must be unique across tenants: paths, hosts, databases, literal SECRET_KEYs.

Reading a tenant's entry (:mod:`dispatcher.tenantentry`) tells :class:`Clashes` each thing it
takes that no other tenant may have, also for a tenant with other errors, so every clash is
reported in the same run; :meth:`Clashes.report` then adds them to the document (each on the
later tenant, naming the earlier one), and the path mounts that nest::

    clashes = Clashes(doc, server_names=frozenset({"app.example.com"}))
    clashes.claim("path", "/acme", "/acme", "acme", ("tenants", "acme", "path"), 8)
    clashes.report()
"""

from __future__ import annotations

from collections.abc import Hashable

from .problems import Path
from .yamlfile import YamlDocument


class Clashes:
    """The first tenant of each thing claimed, by kind; the clashes found so far.

    Only the tenant's name is kept per claim: the rest of a claim is found again in the
    document when it clashes (a record per claim was 40 MB of the peak at 100,000 tenants).
    """

    def __init__(self, doc: YamlDocument, server_names: frozenset[str] | None) -> None:
        self.doc = doc
        self.server_names = server_names
        #: Per kind (``"path"``, ``"host"``, ``"database"``, ``"SECRET_KEY"``): what is
        #: compared (the path, the host, :func:`~dispatcher.rules.database_key`, the key) ->
        #: the tenant that claimed it first.
        self.first: dict[str, dict[Hashable, str]] = {
            "path": {},
            "host": {},
            "database": {},
            "SECRET_KEY": {},
        }
        self._found: list[tuple[Path, str, str, int]] = []

    def claim(
        self, kind: str, key: Hashable, shown: str | None, tenant: str, where: Path, line: int
    ) -> None:
        """``tenant`` takes ``key`` of ``kind``, written at ``where`` on ``line``; ``shown``
        is the value as messages quote it (``None``: never shown, a SECRET_KEY)."""
        other = self.first[kind].setdefault(key, tenant)
        if other != tenant:  # a tenant may name one host twice (subdomain, hosts)
            what = f"{kind} (not shown)" if shown is None else f"{kind} '{shown}'"
            source = f"{self.doc.file}:{self.doc.line(('tenants', other))}"
            message = f"duplicate {what}: tenant '{other}' ({source}) has it too"
            self._found.append((where, message, f"Give each tenant its own {kind}", line))
        if kind == "host" and self.server_names and key in self.server_names:
            message = f"host '{shown}' is also in server_names, where path mounts answer"
            self._found.append((where, message, "Remove it from one of the two", line))

    def report(self) -> None:
        """Add the clashes to the document, in the order they were claimed; then no path
        mount may be inside another (``/a/b`` under ``/a``)."""
        for at, message, fix, line in self._found:
            self.doc.problem(at, message, fix, line=line)
        paths = self.first["path"]
        for path, tenant in paths.items():
            path = str(path)
            parent = path.rpartition("/")[0]
            while parent:
                if parent in paths:
                    where: Path = ("tenants", tenant, "path")
                    self.doc.problem(
                        where,
                        f"path '{path}' is inside '{parent}', the mount of tenant "
                        f"'{paths[parent]}'",
                        "Mounts cannot nest: use a sibling path such as "
                        f"'{parent}-{path[len(parent) + 1 :].replace('/', '-')}'",
                        line=self.doc.line(where),
                    )
                    break
                parent = parent.rpartition("/")[0]
