"""One entry under ``tenants:`` made a :class:`~dispatcher.tenant.TenantConfig`.

:class:`TenantEntries` applies the rules of a tenant's entry, merged over ``defaults``: its
name, mount (path, subdomain or hosts), app module, database URL and config. Every rule adds a
:class:`~dispatcher.problems.Problem` to the document instead of raising, so one run reports
everything; what each entry takes that no other tenant may have is claimed in
:class:`~dispatcher.clashes.Clashes`, also for an entry with errors::

    entries = TenantEntries(doc, root="/srv/app", instance_root="/srv/app/instance",
                            defaults=Defaults(), base_domain=None)
    tenant = entries.read("acme", {"path": "/acme"})    # None if the entry has errors
    entries.clashes.report()                            # once every entry is read
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Set
from typing import Any

from . import rules
from .clashes import Clashes
from .problems import Path
from .schema import Defaults, Limits, Pool, Tenant, salvage, validate
from .tenant import TenantConfig
from .yamlfile import YamlDocument

DEFAULT_DATABASE = "sqlite:///{instance_path}/app.db"

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS = ("name", "instance_path")
_MOUNT_FIELDS = ("path", "subdomain", "hosts", "mount")

Mount = str | tuple[str, ...]


class TenantEntries:
    """Reads the entries under one file's ``tenants:``, each merged over its ``defaults``."""

    def __init__(
        self,
        doc: YamlDocument,
        *,
        root: str,
        instance_root: str,
        defaults: Defaults,
        base_domain: str | None,
        server_names: frozenset[str] | None = None,
        broken_defaults: Set[Any] = frozenset(),
        reported: Set[Path] = frozenset(),
    ) -> None:
        self.doc = doc
        #: The tenants file's folder: app modules are looked up there too.
        self.root = root
        self.instance_root = instance_root
        #: What a tenant's folder starts with: ``instance_root`` normalised, and a slash.
        self._instance_folders = os.path.normpath(os.path.join(instance_root, "x"))[:-1]
        self.defaults = defaults
        self.base_domain = base_domain
        #: Fields of ``defaults`` with a problem: not reported again as missing on each tenant.
        self.broken_defaults = broken_defaults
        #: Fields reported while parsing (a missing ``${VAR}``): not reported twice.
        self.reported = reported
        #: What the entries read so far take that no other tenant may have.
        self.clashes = Clashes(doc, server_names)
        self._missing_modules: dict[str, str | None] = {}
        #: Apps checked and found (most tenants share one): not checked again.
        self._apps_found: set[str] = set()
        #: Database URLs whose placeholders were checked (most tenants share one).
        self._urls_checked: set[str] = set()
        #: An entry with no fields of its own (``acme:``), the common case, validated once.
        self._bare_entry = Tenant()
        #: Per tenant, its fields with a problem from the parse (a missing ``${VAR}``).
        self._broken_while_parsing: dict[Any, set[Any]] = {}
        for path in reported:
            if len(path) > 2 and path[0] == "tenants":
                self._broken_while_parsing.setdefault(path[1], set()).add(path[2])

    def read(self, name: Any, raw: Any) -> TenantConfig | None:
        """Validate one entry merged over ``defaults``; ``None`` if it has errors."""
        before = len(self.doc.problems)
        tenant = self._entry(name, raw)
        if tenant is None:
            return None
        at: Path = ("tenants", name)
        # Fields reported as broken are not reported again as missing.
        broken = self.broken_defaults
        if len(self.doc.problems) > before or name in self._broken_while_parsing:
            broken = (
                broken_fields(self.doc, at, since=before)
                | self._broken_while_parsing.get(name, set())
                | broken
            )
        source = f"{self.doc.file}:{self.doc.line(at)}"
        check_owned_config(self.doc, tenant.config, (*at, "config"))
        instance_path = (  # a valid name is one segment: nothing to normalise
            self._instance_folders + name
            if name and "." not in name and "/" not in name
            else os.path.normpath(os.path.join(self.instance_root, name))
        )
        mount = self._mount(name, tenant, broken)
        app = self._app(name, self._inherited(tenant, "app"), broken)
        database = self._database(
            name, self._inherited(tenant, "database", DEFAULT_DATABASE), instance_path
        )
        secret = tenant.config.get("SECRET_KEY") if tenant.config else None
        if isinstance(secret, str):
            where: Path = (*at, "config")
            line = self.doc.line(where)
            self.clashes.claim("SECRET_KEY", secret, None, name, where, line)
        if len(self.doc.problems) > before or mount is None or app is None or database is None:
            return None
        return self._tenant_config(name, tenant, mount, app, database, instance_path, source)

    def _entry(self, name: Any, raw: Any) -> Tenant | None:
        """The entry's name checked and its fields validated (what is valid of them, if some
        are not); ``None`` if nothing can be read."""
        at: Path = ("tenants", name)
        if not isinstance(name, str):
            plain = self.doc.plain_scalars.get(at, str(name))
            line, at = self.doc.line(at), ("tenants", plain)
            self.doc.problem(
                at,
                f"tenant name {plain} is not text (YAML reads it as {type(name).__name__})",
                f"Quote it: '{plain}'",
                line=line,
            )
            return None
        if not rules.NAME.fullmatch(name):
            self.doc.problem(
                at,
                f"'{name}' is not a valid tenant name",
                "Use 1-63 lower-case letters, digits and '-', starting and "
                "ending with a letter or digit (it becomes a DNS label)",
            )
        if raw is None:
            return self._bare_entry
        entry = raw
        before = len(self.doc.problems)
        return validate(Tenant, entry, at, self.doc) or salvage(
            Tenant, entry, at, self.doc, since=before
        )

    def _inherited(self, tenant: Tenant, field: str, default: Any = None) -> Any:
        """The entry's ``field``, else the one in ``defaults``, else ``default``."""
        value = getattr(tenant, field)
        if value is None:
            value = getattr(self.defaults, field)
        return default if value is None else value

    def _tenant_config(
        self,
        name: str,
        tenant: Tenant,
        mount: Mount,
        app: str,
        database: str,
        instance_path: str,
        source: str,
    ) -> TenantConfig:
        """The checked entry, merged over ``defaults``, as its factory will see it."""
        config = {**(self.defaults.config or {}), **(tenant.config or {})}
        if not database.startswith("sqlite"):
            # Flask-SQLAlchemy reads the pool settings from here; the tenant's own win.
            pool = _merged_pool(self.defaults.pool, tenant.pool)
            config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", pool.engine_options())
        maintenance = self._inherited(tenant, "maintenance")
        return TenantConfig(
            name=name,
            app=app,
            instance_path=instance_path,
            database_uri=database,
            path=mount if isinstance(mount, str) else None,
            hosts=mount if isinstance(mount, tuple) else (),
            config=copy.deepcopy(config) if config else config,
            enabled=self._inherited(tenant, "enabled", True),
            lazy=self._inherited(tenant, "lazy", False),
            maintenance=maintenance.retry_after if maintenance is not None else None,
            max_concurrent=_merged_limits(self.defaults.limits, tenant.limits).concurrent,
            source=source,
        )

    def _field_at(self, name: str, field: str) -> tuple[Path, int]:
        """Where a tenant's field was set: on the tenant, else in ``defaults`` (reported once
        there rather than once per tenant), else nowhere (the tenant's own line)."""
        own: Path = ("tenants", name, field)
        if own in self.doc.lines:
            return own, self.doc.lines[own]
        if ("defaults", field) in self.doc.lines:
            return ("defaults", field), self.doc.lines[("defaults", field)]
        return own, self.doc.line(("tenants", name))

    def _mount(self, name: str, tenant: Tenant, broken: Set[Any]) -> Mount | None:
        """The tenant's path, or its hosts; ``None`` (with a problem) if it has no valid mount."""
        has_host = tenant.subdomain is not None or tenant.hosts is not None
        default = self._inherited(tenant, "mount")
        if tenant.path is not None and has_host:
            self.doc.problem(
                ("tenants", name, "path"),
                "a tenant is mounted by path or by host, not both",
                "Keep either 'path:' or 'subdomain:'/'hosts:'",
            )
            return None
        if tenant.path is not None or (not has_host and default == "path"):
            return self._path(name, tenant.path)
        subdomain = tenant.subdomain if has_host or default != "subdomain" else name
        if has_host or subdomain is not None:
            return self._hosts(name, subdomain, tenant.hosts)
        if not any(difflib.get_close_matches(str(f), _MOUNT_FIELDS) for f in broken):
            # Else a misspelt or broken mount field, already reported.
            self.doc.problem(
                ("tenants", name, "mount"),
                "the tenant has no mount",
                f"Give it 'path: /{name}', 'subdomain: {name}' or 'hosts: [...]', "
                "or set 'mount: path' in defaults",
            )
        return None

    def _path(self, name: str, own: str | None) -> str | None:
        """The tenant's own ``path:``, else ``/<name>`` (``mount: path``), if it is valid."""
        at: Path = ("tenants", name)
        path, where = (own, (*at, "path")) if own else (f"/{name}", at)
        fault = rules.path_fault(path)
        if fault is not None:
            self.doc.problem(where, f"path '{path}' {fault.message}", fault.fix)
            return None
        line = self.doc.line(where)
        self.clashes.claim("path", path, path, name, (*at, "path"), line)
        return path

    def _hosts(
        self, name: str, subdomain: str | None, hosts: list[str] | None
    ) -> tuple[str, ...] | None:
        """The valid ones of the tenant's ``subdomain.<base_domain>`` and ``hosts``."""
        at: Path = ("tenants", name)
        found: list[str] = []
        if subdomain is not None:
            where: Path = (*at, "subdomain")
            line = self.doc.lines.get(where, self._field_at(name, "mount")[1])
            if host := self._subdomain_host(subdomain, where, line):
                self.clashes.claim("host", host, host, name, where, line)
                found.append(host)
        if hosts == [] and subdomain is None:
            self.doc.problem(
                (*at, "hosts"),
                "'hosts' is empty, so the tenant has no mount",
                "List at least one host, or mount it by 'path:'",
            )
        for i, raw_host in enumerate(hosts or ()):
            where = (*at, "hosts", i)
            if host := checked_host(self.doc, raw_host, where):
                line = self.doc.line(where)
                self.clashes.claim("host", host, host, name, where, line)
                found.append(host)
        return tuple(found) or None

    def _subdomain_host(self, subdomain: str, where: Path, line: int) -> str | None:
        """``<subdomain>.<base_domain>``, if both are there and the subdomain is valid."""
        if self.base_domain is None:
            self.doc.problem(
                where,
                "a subdomain mount needs 'base_domain'",
                "Set 'base_domain: example.com' at the top of the file",
                line=line,
            )
            return None
        if not rules.HOST.fullmatch(subdomain):
            self.doc.problem(
                where,
                f"'{subdomain}' is not a valid subdomain",
                "Use lower-case DNS labels (letters, digits, '-')",
                line=line,
            )
            return None
        return f"{subdomain}.{self.base_domain}"

    def _app(self, name: str, app: str | None, broken: Set[Any]) -> str | None:
        """Check the app import path and that its module exists, without importing it."""
        if app in self._apps_found:
            return app
        at, line = self._field_at(name, "app")
        if app is None and "app" in broken:
            return None
        if app is None:
            self.doc.problem(
                at, "the tenant has no app", "Set 'app: tenants.notes' on the tenant or in defaults"
            )
            return None
        if not rules.APP.fullmatch(app):
            self.doc.problem(
                at,
                f"'{app}' is not an import path",
                "Write 'package.module' or 'package.module:factory'",
                line=line,
            )
            return None
        module = app.partition(":")[0]
        if module not in self._missing_modules:
            self._missing_modules[module] = rules.find_module(module, self.root)
        missing = self._missing_modules[module]
        if missing is not None:
            self.doc.problem(
                at,
                missing,
                f"Check the spelling; modules are looked up in {self.root} and the Python path",
                line=line,
            )
            return None
        self._apps_found.add(app)
        return app

    def _database(self, name: str, url: str, instance_path: str) -> str | None:
        """Fill in ``{name}``/``{instance_path}`` and make a relative SQLite path absolute."""
        at, line = self._field_at(name, "database")
        if at in self.reported:  # a missing ${VAR}
            return None
        unknown = [] if url in self._urls_checked else _unknown_placeholders(url)
        if unknown:
            self.doc.problem(
                at,
                f"unknown placeholder '{{{unknown[0]}}}'",
                "Only {name} and {instance_path} are filled in",
                line=line,
            )
            return None
        self._urls_checked.add(url)
        url = url.replace("{name}", name).replace("{instance_path}", instance_path)
        where: Path = ("tenants", name, "database")
        sqlite_file = rules.plain_sqlite_file(url, instance_path)
        if sqlite_file is not None:  # the common case, without parsing a URL (10,000 tenants)
            key: Any = ("sqlite", sqlite_file)
            self.clashes.claim("database", key, url, name, where, line)
            return "sqlite:///" + sqlite_file
        parsed = rules.parse_database_url(url)
        if parsed is None:
            self.doc.problem(
                at,
                "not a database URL",
                "Write an SQLAlchemy URL such as 'sqlite:///{instance_path}/app.db'",
                line=line,
            )
            return None
        absolute = rules.with_default_driver(rules.absolute_sqlite(parsed, instance_path))
        if absolute is not parsed:
            url = absolute.render_as_string(hide_password=False)
        key = rules.database_key(absolute)
        self.clashes.claim("database", key, rules.without_secrets(absolute), name, where, line)
        return url


def _unknown_placeholders(url: str) -> list[str]:
    return [p for p in _PLACEHOLDER.findall(url) if p not in _PLACEHOLDERS]


def checked_host(doc: YamlDocument, raw: str | None, at: Path) -> str | None:
    """Check a host name found at ``at``; return it normalised (lower case, no trailing dot)."""
    if raw is None:
        return None
    fault = rules.host_fault(raw)
    if fault is not None:
        doc.problem(at, fault.message, fault.fix)
        return None
    return rules.normalise_host_name(raw)


def check_owned_config(doc: YamlDocument, config: Any, at: Path) -> None:
    """Config keys that only the dispatcher may set (the database) are errors."""
    for fault in rules.config_faults(config):
        doc.problem((*at, *fault.field), fault.message, fault.fix)


def broken_fields(doc: YamlDocument, at: Path, since: int = 0) -> set[Any]:
    """The fields directly under ``at`` that have a problem (among the problems from
    ``since`` on)."""
    depth = len(at)
    return {
        p.path[depth] for p in doc.problems[since:] if len(p.path) > depth and p.path[:depth] == at
    }


_NO_LIMITS = Limits(concurrent=None)


def _merged_limits(*limits: Limits | None) -> Limits:
    """``limits`` merged key by key, the tenant's winning over ``defaults``."""
    given = [item for item in limits if item is not None]
    if len(given) < 2:  # most tenants: nothing to merge (a model per tenant costs 10,000 of them)
        return given[0] if given else _NO_LIMITS
    fields: dict[str, Any] = {}
    for item in given:
        fields.update(item.model_dump(exclude_none=True))
    return Limits(**fields)


def _merged_pool(*pools: Pool | None) -> Pool:
    """Pool settings merged key by key, later ones winning (tenant over defaults)."""
    fields: dict[str, Any] = {}
    for pool in pools:
        if pool is not None:
            fields.update(pool.model_dump(exclude_unset=True))
    return Pool(**fields)
