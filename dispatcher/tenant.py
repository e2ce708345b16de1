"""What a tenant app's factory receives: one tenant's resolved, read-only settings.

The loader (:mod:`dispatcher.spec`) turns each entry of ``tenants.yaml`` into a
:class:`TenantConfig`, with defaults merged, ``${VAR}`` expanded and the database URL filled in.
A factory reads it and never reads ``tenants.yaml`` itself::

    def create_app(tenant_config):
        app = Flask(__name__, instance_path=tenant_config.instance_path,
                    instance_relative_config=True)
        app.config.from_mapping(SQLALCHEMY_DATABASE_URI=tenant_config.database_uri)
        app.config.from_mapping(tenant_config.config)
        app.config.from_pyfile("config.py", silent=True)
        return app
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_NO_CONFIG: Mapping[str, Any] = MappingProxyType({})

#: Seconds a maintenance tenant asks clients to wait, unless ``maintenance: {retry_after: N}``.
DEFAULT_RETRY_AFTER = 300


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
