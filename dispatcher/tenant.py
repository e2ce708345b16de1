"""What loading tenants.yaml gives: a :class:`TenantConfig` per tenant, in a :class:`TenantSet`.

The loader (:mod:`dispatcher.loader`) turns each entry of ``tenants.yaml`` into a
:class:`TenantConfig` (:mod:`dispatcher.tenantentry`), with defaults merged, ``${VAR}``
expanded and the database URL filled in, and gathers them with the file's global settings in a
:class:`TenantSet`. A factory reads its ``TenantConfig`` and never reads ``tenants.yaml``::

    def create_app(tenant_config):
        app = Flask(__name__, instance_path=tenant_config.instance_path,
                    instance_relative_config=True)
        app.config.from_mapping(SQLALCHEMY_DATABASE_URI=tenant_config.database_uri)
        app.config.from_mapping(tenant_config.config)
        app.config.from_pyfile("config.py", silent=True)
        return app
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .problems import Problem
    from .schema import Proxy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NO_CONFIG: Mapping[str, Any] = MappingProxyType({})

#: Seconds a maintenance tenant asks clients to wait, unless ``maintenance: {retry_after: N}``.
DEFAULT_RETRY_AFTER = 300

#: Who may read ``/_dispatcher/metrics`` when the file has no ``metrics:``: this host only.
DEFAULT_METRICS_ALLOW = ("127.0.0.0/8", "::1")


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One tenant, as its factory sees it. Frozen: a factory cannot change another's view.

    ``config`` is a read-only mapping, deep-copied per tenant, so one tenant's app mutating a
    nested value (a list in its config, say) can never change what another tenant sees.
    """

    name: str
    app: str
    instance_path: str
    database_uri: str
    #: The path prefix of a path tenant (``"/acme"``); ``None`` for a host tenant.
    path: str | None = None
    #: The exact hosts of a host tenant (``("globex.example.com", "globex.com")``).
    hosts: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    enabled: bool = True
    lazy: bool = False
    #: ``None`` when serving; else the ``Retry-After`` seconds its 503 answers carry.
    maintenance: int | None = None
    #: ``limits: {concurrent: N}``: at most this many of its requests in flight per worker;
    #: ``None``: the worker's default (its threads - 1, see :mod:`dispatcher.limits`).
    max_concurrent: int | None = None
    #: ``"tenants.yaml:12"``: where the tenant is defined, for messages about it. Not compared:
    #: moving a tenant within the file does not make it a different tenant.
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.config:  # most tenants: one shared empty mapping (100,000 tenants: 10 MB)
            object.__setattr__(self, "config", _NO_CONFIG)
        elif not isinstance(self.config, MappingProxyType):
            object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    @property
    def mount(self) -> str | tuple[str, ...]:
        """Where the tenant answers: its path, or its hosts."""
        return self.path if self.path is not None else self.hosts

    @property
    def mount_label(self) -> str:
        """The mount as one line of text, for tables and messages."""
        return self.path if self.path is not None else ", ".join(self.hosts)

    @property
    def module(self) -> str:
        """The import path of the app's module (``app`` without ``:factory``)."""
        return self.app.partition(":")[0]

    @property
    def factory(self) -> str:
        """The factory's name in :attr:`module`; ``create_app`` unless ``app`` names one."""
        return self.app.partition(":")[2] or "create_app"

    @property
    def state(self) -> str:
        """The configured state: ``disabled``, ``maintenance``, ``lazy`` or ``eager``."""
        if not self.enabled:
            return "disabled"
        if self.maintenance is not None:
            return "maintenance"
        return "lazy" if self.lazy else "eager"


@dataclass(frozen=True)
class TenantSet:
    """A validated tenants file: its tenants (disabled ones too) and its global settings."""

    file: str
    tenants: tuple[TenantConfig, ...]
    base_domain: str | None = None
    #: Hosts on which path mounts answer; ``None`` means any host.
    server_names: frozenset[str] | None = None
    proxy: Proxy | None = None
    #: The folder holding the tenants' instance folders (absolute).
    instance_root: str = ""
    #: Create a tenant's missing (PostgreSQL) database when its app is first built.
    create_databases: bool = False
    #: A PostgreSQL database every node shares for cluster-wide holds and migration locks.
    control_database: str | None = None
    #: Lazy tenants' apps idle this many seconds are dropped (and rebuilt when needed).
    idle_timeout: int | None = None
    #: At most this many lazy tenants' apps are kept built per worker (least recently used go).
    max_live_apps: int | None = None
    #: Clients (by the address ``proxy`` establishes) that may read ``/_dispatcher/metrics``.
    metrics_allow: tuple[Network, ...] = field(
        default_factory=lambda: tuple(map(ipaddress.ip_network, DEFAULT_METRICS_ALLOW))
    )
    warnings: tuple[Problem, ...] = ()
    #: The file's content as loaded (newlines as they are in the file).
    text: str = field(default="", repr=False, compare=False)

    @cached_property
    def tenants_file_sha256(self) -> str:
        """Hex sha256 of the file's bytes as loaded: nodes serving the same file agree."""
        return text_sha256(self.text)

    @property
    def enabled(self) -> tuple[TenantConfig, ...]:
        """The tenants that are mounted."""
        return tuple(t for t in self.tenants if t.enabled)

    def __getitem__(self, name: str) -> TenantConfig:
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, TenantConfig]:
        """Made on the first lookup by name (``migrate --all`` makes one per tenant: a scan
        each took 3 ms at 100,000 tenants, 150 s in all); a server never looks tenants up
        this way."""
        return {tenant.name: tenant for tenant in self.tenants}

    def __iter__(self) -> Iterator[TenantConfig]:
        return iter(self.tenants)

    def __len__(self) -> int:
        return len(self.tenants)


def text_sha256(text: str) -> str:
    """The hex sha256 of a tenants file whose content (read with ``newline=""``) is ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
