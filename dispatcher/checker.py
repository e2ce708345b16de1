"""The rules of tenants.yaml applied to one parsed file, tenant by tenant, then across tenants.

:func:`dispatcher.spec.check_tenants` drives a :class:`Checker`: top-level fields first, then
each tenant (merged over ``defaults``), then the clashes between tenants. Every rule adds a
:class:`~dispatcher.problems.Problem` to the document instead of raising, so one run reports
everything; a tenant with a broken field still takes part in the clash checks::

    checker = Checker(doc, root="/srv/app", instance_root=None)
    tenant = checker.tenant("acme", {"path": "/acme"}, Defaults(), "/srv/app/instance", None)
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any

from . import rules
from .problems import Path
from .schema import Defaults, Limits, Pool, Tenant, salvage, validate
from .tenant import Network, TenantConfig
from .yamlfile import YamlDocument

DEFAULT_DATABASE = "sqlite:///{instance_path}/app.db"

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS = ("name", "instance_path")
_YAML11_BOOLEANS = ("yes", "no", "on", "off")
_MOUNT_FIELDS = ("path", "subdomain", "hosts", "mount")


@dataclass
class Claim:
    """What one tenant takes that no other may have: checked across tenants at the end, also
    for tenants with other errors, so every clash is reported in the same run."""

    name: str
    source: str
    path: tuple[str, int] | None = None
    hosts: list[tuple[str, Path, int]] = field(default_factory=list)  # host, field, line
    database: tuple[tuple[Any, ...], str, Path, int] | None = None  # key, shown, field, line
    secret: tuple[str, Path, int] | None = None


class Checker:
    """Applies every rule to one parsed document, adding problems to it."""

    def __init__(self, doc: YamlDocument, root: str, instance_root: str | None) -> None:
        self.doc = doc
        self.root = root
        self.instance_root = instance_root
        self.modules: dict[str, str | None] = {}
        self.claims: list[Claim] = []
        self.broken_defaults: set[Any] = set()  # fields of defaults with a problem
        self._defaults_fields: dict[str, Any] | None = None
        # Fields already reported while parsing (a missing ${VAR}): not reported twice.
        self.parse_problems = {p.path for p in doc.problems}

    def warn_yaml_booleans(self) -> None:
        """``SITE_NAME: no`` in a config is legal YAML for ``False``, and rarely meant."""
        for path, text in self.doc.plain_scalars.items():
            in_config = (
                path[1:2] == ("config",)
                if path[:1] == ("defaults",)
                else (path[:1] == ("tenants",) and path[2:3] == ("config",))
            )
            if in_config and text.lower() in _YAML11_BOOLEANS:
                value = "true" if text.lower() in ("yes", "on") else "false"
                self.doc.problem(
                    path,
                    f"YAML reads unquoted {text} as {value}",
                    f"Quote it ('{text}') if you meant text, or write {value}",
                    warning=True,
                )

    def tenant(
        self, name: Any, raw: Any, defaults: Defaults, instance_root: str, base_domain: str | None
    ) -> TenantConfig | None:
        """Validate one tenant entry merged over ``defaults``; ``None`` if it has errors."""
        at: Path = ("tenants", name)
        before = len(self.doc.problems)
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
        entry = {} if raw is None else raw
        spec = validate(Tenant, entry, at, self.doc) or salvage(Tenant, entry, at, self.doc)
        if spec is None:
            return None
        # Fields reported as broken are not reported again as missing.
        broken = self.broken_fields(at) | self.broken_defaults
        claim = Claim(name, f"{self.doc.file}:{self.doc.line(at)}")
        self.claims.append(claim)
        merged = {**self.defaults_fields(defaults), **spec.model_dump(exclude_none=True)}
        config = {**(defaults.config or {}), **(spec.config or {})}
        self.owned_config(spec.config, (*at, "config"))
        if spec.config and isinstance(spec.config.get("SECRET_KEY"), str):
            claim.secret = (
                spec.config["SECRET_KEY"],
                (*at, "config"),
                self.doc.line((*at, "config")),
            )
        instance_path = os.path.normpath(os.path.join(instance_root, name))
        mount = self.mount(name, spec, merged.get("mount"), base_domain, claim, broken)
        app = self.app(name, merged.get("app"), broken)
        database = self.database(
            name, merged.get("database", DEFAULT_DATABASE), instance_path, claim
        )
        if len(self.doc.problems) > before or mount is None or app is None or database is None:
            return None
        if not database.startswith("sqlite"):
            # Flask-SQLAlchemy reads the pool settings from here; the tenant's own win.
            pool = _merged_pool(defaults.pool, spec.pool)
            config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", pool.engine_options())
        maintenance = merged.get("maintenance")
        limits = _merged_limits(defaults.limits, spec.limits)
        return TenantConfig(
            name=name,
            app=app,
            instance_path=instance_path,
            database_uri=database,
            path=mount if isinstance(mount, str) else None,
            hosts=mount if isinstance(mount, tuple) else (),
            config=copy.deepcopy(config),
            enabled=merged.get("enabled", True),
            lazy=merged.get("lazy", False),
            maintenance=maintenance["retry_after"] if maintenance is not None else None,
            max_concurrent=limits.concurrent,
            source=claim.source,
        )

    def owned_config(self, config: Any, at: Path) -> None:
        """Config keys that only the dispatcher may set (the database) are errors."""
        for key_path, message, fix in rules.config_problems(config):
            self.doc.problem((*at, *key_path), message, fix)

    def networks(self, values: list[str], at: Path) -> tuple[Network, ...]:
        """``metrics.allow``: each entry a network (``10.0.0.0/8``) or one address (``::1``)."""
        networks = []
        for i, value in enumerate(values):
            try:
                networks.append(ipaddress.ip_network(value))
            except ValueError:
                loose = _loose_network(value)
                if loose is not None:
                    self.doc.problem((*at, i), f"'{value}' has host bits set", f"Write '{loose}'")
                else:
                    self.doc.problem(
                        (*at, i),
                        f"'{value}' is not an IP network or address",
                        "Write a network such as '10.0.0.0/8', or one address such as '::1'",
                    )
        return tuple(networks)

    def defaults_fields(self, defaults: Defaults) -> dict[str, Any]:
        """``defaults`` as a dict, computed once per file rather than once per tenant."""
        if self._defaults_fields is None:
            self._defaults_fields = defaults.model_dump(exclude_none=True)
        return self._defaults_fields

    def broken_fields(self, at: Path) -> set[Any]:
        """The fields directly under ``at`` that already have a problem."""
        depth = len(at)
        return {
            p.path[depth] for p in self.doc.problems if len(p.path) > depth and p.path[:depth] == at
        }

    def field_at(self, name: str, field: str) -> tuple[Path, int]:
        """Where a tenant's field was set: on the tenant, else in ``defaults`` (reported once
        there rather than once per tenant), else nowhere (the tenant's own line)."""
        own: Path = ("tenants", name, field)
        if own in self.doc.lines:
            return own, self.doc.lines[own]
        if ("defaults", field) in self.doc.lines:
            return ("defaults", field), self.doc.lines[("defaults", field)]
        return own, self.doc.line(("tenants", name))

    def mount(
        self,
        name: str,
        spec: Tenant,
        default: str | None,
        base_domain: str | None,
        claim: Claim,
        broken: set[Any],
    ) -> str | tuple[str, ...] | None:
        """The tenant's path, or its hosts; ``None`` (with a problem) if it has no valid mount."""
        at: Path = ("tenants", name)
        has_host = spec.subdomain is not None or spec.hosts is not None
        if spec.path is not None and has_host:
            self.doc.problem(
                (*at, "path"),
                "a tenant is mounted by path or by host, not both",
                "Keep either 'path:' or 'subdomain:'/'hosts:'",
            )
            return None
        if spec.path is not None or (not has_host and default == "path"):
            path, where = (spec.path, (*at, "path")) if spec.path else (f"/{name}", at)
            message, fix = rules.path_problem(path)
            if message:
                self.doc.problem(where, f"path '{path}' {message}", fix)
                return None
            claim.path = (path, self.doc.line(where))
            return path
        subdomain = spec.subdomain if has_host or default != "subdomain" else name
        if not has_host and subdomain is None:
            if any(difflib.get_close_matches(str(f), _MOUNT_FIELDS) for f in broken):
                return None  # a misspelt or broken mount field, already reported
            self.doc.problem(
                (*at, "mount"),
                "the tenant has no mount",
                f"Give it 'path: /{name}', 'subdomain: {name}' or 'hosts: [...]', "
                "or set 'mount: path' in defaults",
            )
            return None
        if subdomain is not None:
            where, line = (
                (*at, "subdomain"),
                self.doc.lines.get((*at, "subdomain"), self.field_at(name, "mount")[1]),
            )
            if base_domain is None:
                self.doc.problem(
                    where,
                    "a subdomain mount needs 'base_domain'",
                    "Set 'base_domain: example.com' at the top of the file",
                    line=line,
                )
            elif not rules.HOST.fullmatch(subdomain):
                self.doc.problem(
                    where,
                    f"'{subdomain}' is not a valid subdomain",
                    "Use lower-case DNS labels (letters, digits, '-')",
                    line=line,
                )
            else:
                claim.hosts.append((f"{subdomain}.{base_domain}", where, line))
        if spec.hosts == [] and subdomain is None:
            self.doc.problem(
                (*at, "hosts"),
                "'hosts' is empty, so the tenant has no mount",
                "List at least one host, or mount it by 'path:'",
            )
        for i, raw_host in enumerate(spec.hosts or ()):
            if host := self.host(raw_host, (*at, "hosts", i)):
                claim.hosts.append((host, (*at, "hosts", i), self.doc.line((*at, "hosts", i))))
        return tuple(host for host, _, _ in claim.hosts) or None

    def host(self, raw: str | None, at: Path) -> str | None:
        """Check a host name; return it normalised (lower case, no trailing dot)."""
        if raw is None:
            return None
        message, fix = rules.host_problem(raw)
        if message:
            self.doc.problem(at, message, fix)
            return None
        return rules.normalise_host_name(raw)

    def app(self, name: str, app: str | None, broken: set[Any]) -> str | None:
        """Check the app import path and that its module exists, without importing it."""
        at, line = self.field_at(name, "app")
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
        if module not in self.modules:
            self.modules[module] = rules.find_module(module, self.root)
        missing = self.modules[module]
        if missing is not None:
            self.doc.problem(
                at,
                missing,
                f"Check the spelling; modules are looked up in {self.root} and the Python path",
                line=line,
            )
            return None
        return app

    def database(self, name: str, url: str, instance_path: str, claim: Claim) -> str | None:
        """Fill in ``{name}``/``{instance_path}`` and make a relative SQLite path absolute."""
        at, line = self.field_at(name, "database")
        if at in self.parse_problems:  # a missing ${VAR}, already reported
            return None
        unknown = [p for p in _PLACEHOLDER.findall(url) if p not in _PLACEHOLDERS]
        if unknown:
            self.doc.problem(
                at,
                f"unknown placeholder '{{{unknown[0]}}}'",
                "Only {name} and {instance_path} are filled in",
                line=line,
            )
            return None
        url = url.replace("{name}", name).replace("{instance_path}", instance_path)
        where: Path = ("tenants", name, "database")
        sqlite_file = rules.plain_sqlite_file(url, instance_path)
        if sqlite_file is not None:  # the common case, without parsing a URL (10,000 tenants)
            claim.database = (("sqlite", sqlite_file), url, where, line)
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
        claim.database = (rules.database_key(absolute), url, where, line)
        return url

    def check_clashes(self, server_names: frozenset[str] | None) -> None:
        """No two tenants share a path, a host, a database or a literal SECRET_KEY; no path
        mount contains another; no host is also a server name."""
        paths: dict[str, Claim] = {}
        hosts: dict[str, Claim] = {}
        databases: dict[tuple[Any, ...], Claim] = {}
        secrets: dict[str, Claim] = {}
        for claim in self.claims:
            at: Path = ("tenants", claim.name)
            if claim.path is not None:
                path, line = claim.path
                self.unique(paths, path, claim, (*at, "path"), line, f"path '{path}'")
            for host, where, line in claim.hosts:
                self.unique(hosts, host, claim, where, line, f"host '{host}'")
                if server_names and host in server_names:
                    self.doc.problem(
                        where,
                        f"host '{host}' is also in server_names, where path mounts answer",
                        "Remove it from one of the two",
                        line=line,
                    )
            if claim.database is not None:
                key, shown, where, line = claim.database
                self.unique(databases, key, claim, where, line, f"database '{shown}'")
            if claim.secret is not None:
                secret, where, line = claim.secret
                self.unique(secrets, secret, claim, where, line, "SECRET_KEY (not shown)")
        for path, claim in paths.items():
            parent = path.rpartition("/")[0]
            while parent:
                if parent in paths:
                    self.doc.problem(
                        ("tenants", claim.name, "path"),
                        f"path '{path}' is inside '{parent}', the mount of tenant "
                        f"'{paths[parent].name}'",
                        "Mounts cannot nest: use a sibling path such as "
                        f"'{parent}-{path[len(parent) + 1 :].replace('/', '-')}'",
                        line=claim.path[1] if claim.path else None,
                    )
                    break
                parent = parent.rpartition("/")[0]

    def unique(
        self, seen: dict[Any, Claim], key: Any, claim: Claim, where: Path, line: int, what: str
    ) -> None:
        other = seen.setdefault(key, claim)
        if other is not claim:
            self.doc.problem(
                where,
                f"duplicate {what}: tenant '{other.name}' ({other.source}) has it too",
                f"Give each tenant its own {what.split(' ')[0]}",
                line=line,
            )


def _loose_network(value: str) -> str | None:
    """``10.1.2.3/8`` -> ``10.0.0.0/8``: what an entry with host bits set probably meant."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return None


def _merged_limits(*limits: Limits | None) -> Limits:
    """``limits`` merged key by key, the tenant's winning over ``defaults``."""
    fields: dict[str, Any] = {}
    for item in limits:
        if item is not None:
            fields.update(item.model_dump(exclude_none=True))
    return Limits(**fields)


def _merged_pool(*pools: Pool | None) -> Pool:
    """Pool settings merged key by key, later ones winning (tenant over defaults)."""
    fields: dict[str, Any] = {}
    for pool in pools:
        if pool is not None:
            fields.update(pool.model_dump(exclude_unset=True))
    return Pool(**fields)
