"""The connection budget: how many database connections a deployment can open, per server.

Every uWSGI worker process keeps one pool per tenant, and its threads share that pool, so a
worker opens at most ``min(threads, pool_size + max_overflow)`` connections to a tenant's
database. Per database server, over every node::

    nodes x processes x sum over its tenants of min(threads, pool_size + max_overflow)

must stay below the server's ``max_connections`` (less the few it reserves for superusers), or
busy moments end in "too many connections". ``python -m dispatcher check`` warns when it does
not; the processes and threads come from uwsgi.ini (or ``--processes``/``--threads``)::

    for line in budget_warnings(tenant_set, processes=2, threads=4, nodes=1):
        print(line)
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from .tenant import TenantSet

#: Connections PostgreSQL keeps for superusers by default (superuser_reserved_connections).
RESERVED = 3


@dataclass
class ServerBudget:
    """The connections one database server may be asked for."""

    server: str
    url: URL
    per_worker: int = 0
    tenants: list[str] = field(default_factory=list)

    def total(self, processes: int, nodes: int) -> int:
        return self.per_worker * processes * nodes


def budgets(tenant_set: TenantSet, threads: int) -> list[ServerBudget]:
    """Connections per worker, grouped by database server (PostgreSQL and MySQL tenants)."""
    servers: dict[str, ServerBudget] = {}
    for tenant in tenant_set.enabled:
        url = make_url(tenant.database_uri)
        if url.get_backend_name() == "sqlite":
            continue
        options = tenant.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})
        pool = options.get("pool_size", 5) + options.get("max_overflow", 10)
        port = f":{url.port}" if url.port else ""
        server = f"{url.get_backend_name()}://{url.host or 'localhost'}{port}"
        budget = servers.setdefault(server, ServerBudget(server, url))
        budget.per_worker += min(threads, pool)
        budget.tenants.append(tenant.name)
    return list(servers.values())


def budget_warnings(
    tenant_set: TenantSet, processes: int, threads: int, nodes: int = 1
) -> list[str]:
    """One warning per server whose budget exceeds (or cannot be compared with) its limit."""
    warnings = []
    formula = f"{nodes} node(s) x {processes} process(es) x"
    for budget in budgets(tenant_set, threads):
        total = budget.total(processes, nodes)
        limit = _max_connections(budget.url)
        if limit is None:
            warnings.append(
                f"{budget.server}: could not ask for max_connections; the deployment may open "
                f"{total} connections ({formula} {budget.per_worker} per worker)"
            )
        elif total > limit - RESERVED:
            warnings.append(
                f"{budget.server}: the deployment may open {total} connections ({formula} "
                f"{budget.per_worker} per worker, over {len(budget.tenants)} tenant(s)), more "
                f"than max_connections {limit} less {RESERVED} reserved. Lower 'pool:' sizes, "
                "use fewer processes or threads, or raise max_connections (docs/scaling.md)"
            )
    return warnings


def _max_connections(url: URL) -> int | None:
    if url.get_backend_name() != "postgresql":
        return None
    engine = create_engine(
        url.set(database="postgres"), poolclass=NullPool, connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SHOW max_connections")).scalar_one())
    except Exception:  # unreachable, no permission: the warning says it could not ask
        return None
    finally:
        engine.dispose()


def uwsgi_workers(folder: str) -> tuple[int, int]:
    """``processes`` and ``threads`` of the uwsgi.ini in ``folder`` (uWSGI's 1, 1 if absent)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(os.path.join(folder, "uwsgi.ini"))
    section = parser["uwsgi"] if parser.has_section("uwsgi") else {}
    return int(section.get("processes", 1)), int(section.get("threads", 1))
