"""Load tenants.yaml into a :class:`TenantSet`: every rule of the file format, checked at once.

Loading is pure: it reads the file and the environment, imports no tenant code (app modules are
found with ``importlib.util.find_spec``) and creates nothing on disk, so a bad file changes
nothing. Every problem is collected; :func:`load_tenants` raises one :class:`ConfigError` listing
them all, :func:`check_tenants` returns them (with warnings) for ``python -m dispatcher check``::

    tenant_set = load_tenants("tenants.yaml")
    for tenant in tenant_set.enabled:
        print(tenant.name, tenant.mount)     # "/acme", or ("globex.example.com",)
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import os
import pkgutil
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .problems import ConfigError, Problem
from .schema import Defaults, Proxy, Tenant, TenantsFile, validate
from .tenant import TenantConfig
from .yamlfile import YamlDocument, parse_yaml

#: Paths under this prefix belong to the dispatcher on every host.
RESERVED_PREFIX = "/_dispatcher"
DEFAULT_DATABASE = "sqlite:///{instance_path}/app.db"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(_LABEL)
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SEGMENT = re.compile(r"[a-z0-9._-]+")
_APP = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*)?")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS = ("name", "instance_path")
_YAML11_BOOLEANS = ("yes", "no", "on", "off")


@dataclass(frozen=True)
class TenantSet:
    """A validated tenants file: its tenants (disabled ones too) and its global settings."""

    file: str
    tenants: tuple[TenantConfig, ...]
    base_domain: str | None = None
    #: Hosts on which path mounts answer; ``None`` means any host.
    server_names: frozenset[str] | None = None
    proxy: Proxy | None = None
    warnings: tuple[Problem, ...] = ()

    @property
    def enabled(self) -> tuple[TenantConfig, ...]:
        """The tenants that are mounted."""
        return tuple(t for t in self.tenants if t.enabled)

    def __getitem__(self, name: str) -> TenantConfig:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise KeyError(name)

    def __iter__(self) -> Iterator[TenantConfig]:
        return iter(self.tenants)

    def __len__(self) -> int:
        return len(self.tenants)


def load_tenants(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    instance_root: str | None = None,
) -> TenantSet:
    """Read and validate a tenants file; raise :class:`ConfigError` listing every problem.

    ``instance_root`` overrides the file's own (the test plugin puts tenants on temporary
    folders this way; ``{instance_path}`` in database URLs follows it).
    """
    tenant_set, problems = check_tenants(path, environ, instance_root=instance_root)
    errors = [p for p in problems if not p.warning]
    if tenant_set is None or errors:
        raise ConfigError(errors)
    return tenant_set


def check_tenants(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    instance_root: str | None = None,
) -> tuple[TenantSet | None, list[Problem]]:
    """Validate a tenants file; return the set (``None`` if any error) and all problems."""
    file = os.fspath(path)
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        fix = "Pass the right file with -f or $TENANTS_FILE"
        return None, [Problem(file, 0, (), f"cannot read the tenants file: {reason}", fix)]
    doc = parse_yaml(text, file, os.environ if environ is None else environ)
    tenant_set = _Checker(doc, os.path.dirname(os.path.abspath(file)), instance_root).run()
    # A problem in defaults is reported once, not once per tenant; then in file order.
    problems = sorted(dict.fromkeys(doc.problems), key=lambda p: p.line)
    errors = [p for p in problems if not p.warning]
    return (None if errors else tenant_set), problems


class _Checker:
    """Applies every rule to one parsed document, adding problems to it."""

    def __init__(self, doc: YamlDocument, root: str, instance_root: str | None) -> None:
        self.doc = doc
        self.root = root
        self.instance_root = instance_root
        self.modules: dict[str, str | None] = {}

    def run(self) -> TenantSet | None:
        doc = self.doc
        if doc.data is None and doc.problems:
            return None
        if not isinstance(doc.data, dict):
            doc.problem(
                (),
                "the file must be a mapping with 'version: 1' and 'tenants:'",
                "See docs/tenants-yaml.md for an example",
            )
            return None
        raw_tenants = doc.data.get("tenants")
        top = validate(TenantsFile, {**doc.data, "tenants": None}, (), doc)
        if top is None:
            return None
        defaults = top.defaults or Defaults()
        if defaults.config and "SECRET_KEY" in defaults.config:
            doc.problem(
                ("defaults", "config", "SECRET_KEY"),
                "a SECRET_KEY in defaults would be shared by every tenant",
                "Remove it: each tenant gets its own key, generated into its instance "
                "folder, or set one per tenant in instance/<name>/config.py",
            )
        base_domain = self.host(top.base_domain, ("base_domain",))
        server_names = None
        if top.server_names is not None:
            server_names = frozenset(
                h
                for i, n in enumerate(top.server_names)
                if (h := self.host(n, ("server_names", i)))
            )
        if raw_tenants is not None and not isinstance(raw_tenants, dict):
            doc.problem(
                ("tenants",),
                "must be a mapping of tenant names to their settings",
                "Write one 'name:' line per tenant under 'tenants:'",
            )
            raw_tenants = None
        instance_root = self.instance_root or os.path.join(self.root, top.instance_root)
        tenants = [
            tenant
            for name, raw in (raw_tenants or {}).items()
            if (tenant := self.tenant(name, raw, defaults, instance_root, base_domain))
        ]
        self.check_unique(tenants, server_names)
        self.warn_yaml_booleans()
        if server_names is None and any(t.path is not None for t in tenants):
            doc.problem(
                ("server_names",),
                "path mounts answer on any Host header",
                "Set 'server_names: [app.example.com]' to the hosts they serve",
                line=doc.line(("tenants",)),
                warning=True,
            )
        return TenantSet(
            file=doc.file,
            tenants=tuple(tenants),
            base_domain=base_domain,
            server_names=server_names,
            proxy=top.proxy,
            warnings=tuple(p for p in doc.problems if p.warning),
        )

    def warn_yaml_booleans(self) -> None:
        """``SITE_NAME: no`` in a config is legal YAML for ``False``, and rarely meant."""
        for path, text in self.doc.plain_scalars.items():
            if "config" in path and text.lower() in _YAML11_BOOLEANS:
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
        at = ("tenants", name)
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
        if not _NAME.fullmatch(name):
            self.doc.problem(
                at,
                f"'{name}' is not a valid tenant name",
                "Use 1-63 lower-case letters, digits and '-', starting and "
                "ending with a letter or digit (it becomes a DNS label)",
            )
        spec = validate(Tenant, {} if raw is None else raw, at, self.doc)
        if spec is None or len(self.doc.problems) > before:
            return None
        merged = {**defaults.model_dump(exclude_none=True), **spec.model_dump(exclude_none=True)}
        config = {**(defaults.config or {}), **(spec.config or {})}
        instance_path = os.path.normpath(os.path.join(instance_root, name))
        mount = self.mount(name, spec, merged.get("mount"), base_domain)
        app = self.app(name, merged.get("app"))
        database = self.database(name, merged.get("database", DEFAULT_DATABASE), instance_path)
        if len(self.doc.problems) > before or mount is None or app is None or database is None:
            return None
        path, hosts = mount
        maintenance = merged.get("maintenance")
        return TenantConfig(
            name=name,
            app=app,
            instance_path=instance_path,
            database_uri=database,
            path=path,
            hosts=hosts,
            config=copy.deepcopy(config),
            enabled=merged.get("enabled", True),
            lazy=merged.get("lazy", False),
            maintenance=maintenance["retry_after"] if maintenance is not None else None,
            source=f"{self.doc.file}:{self.doc.line(at)}",
        )

    def field_at(self, name: str, field: str) -> tuple[tuple[Any, ...], int]:
        """Where a tenant's field was set: on the tenant, else in ``defaults`` (reported once
        there rather than once per tenant), else nowhere (the tenant's own line)."""
        own = ("tenants", name, field)
        if own in self.doc.lines:
            return own, self.doc.lines[own]
        if ("defaults", field) in self.doc.lines:
            return ("defaults", field), self.doc.lines[("defaults", field)]
        return own, self.doc.line(("tenants", name))

    def mount(
        self, name: str, spec: Tenant, default: str | None, base_domain: str | None
    ) -> tuple[str | None, tuple[str, ...]] | None:
        at = ("tenants", name)
        has_host = spec.subdomain is not None or spec.hosts is not None
        if spec.path is not None and has_host:
            self.doc.problem(
                (*at, "path"),
                "a tenant is mounted by path or by host, not both",
                "Keep either 'path:' or 'subdomain:'/'hosts:'",
            )
            return None
        if spec.path is not None:
            path = self.path(spec.path, (*at, "path"))
            return (path, ()) if path else None
        if not has_host:
            if default == "path":
                return (f"/{name}", ())
            if default == "subdomain":
                spec = spec.model_copy(update={"subdomain": name})
            else:
                self.doc.problem(
                    (*at, "mount"),
                    "the tenant has no mount",
                    "Give it 'path: /"
                    + name
                    + "', 'subdomain: "
                    + name
                    + "' or 'hosts: [...]', or set 'mount: path' in defaults",
                )
                return None
        hosts: list[str] = []
        if spec.subdomain is not None:
            line = self.doc.lines.get((*at, "subdomain"), self.field_at(name, "mount")[1])
            if base_domain is None:
                self.doc.problem(
                    (*at, "subdomain"),
                    "a subdomain mount needs 'base_domain'",
                    "Set 'base_domain: example.com' at the top of the file",
                    line=line,
                )
            elif not _HOST.fullmatch(spec.subdomain):
                self.doc.problem(
                    (*at, "subdomain"),
                    f"'{spec.subdomain}' is not a valid subdomain",
                    "Use lower-case DNS labels (letters, digits, '-')",
                    line=line,
                )
            else:
                hosts.append(f"{spec.subdomain}.{base_domain}")
        for i, raw_host in enumerate(spec.hosts or ()):
            host = self.host(raw_host, (*at, "hosts", i))
            if host:
                hosts.append(host)
        return (None, tuple(hosts)) if hosts else None

    def path(self, path: str, at: tuple[Any, ...]) -> str | None:
        """Check a path mount; return it, or ``None`` with a problem recorded."""
        message, fix = _path_problem(path)
        if message:
            self.doc.problem(at, f"path '{path}' {message}", fix)
            return None
        return path

    def host(self, raw: str | None, at: tuple[Any, ...]) -> str | None:
        """Check a host name; return it normalised (lower case, no trailing dot)."""
        if raw is None:
            return None
        host = raw.lower().removesuffix(".")
        if ":" in host or "/" in host:
            self.doc.problem(
                at,
                f"'{raw}' is not a host name",
                "Write the bare host, without "
                "scheme, port or path: hosts are matched whatever the port",
            )
        elif "*" in host:
            self.doc.problem(
                at,
                f"'{raw}' is a wildcard",
                "List each host, or use 'subdomain:' with 'base_domain' for *.domain tenants",
            )
        elif len(host) > 253 or not _HOST.fullmatch(host):
            self.doc.problem(
                at,
                f"'{raw}' is not a valid host name",
                "Use DNS labels of letters, digits and '-', joined by dots",
            )
        else:
            return host
        return None

    def app(self, name: str, app: str | None) -> str | None:
        """Check the app import path and that its module exists, without importing it."""
        at, line = self.field_at(name, "app")
        if app is None:
            self.doc.problem(
                at, "the tenant has no app", "Set 'app: tenants.notes' on the tenant or in defaults"
            )
            return None
        if not _APP.fullmatch(app):
            self.doc.problem(
                at,
                f"'{app}' is not an import path",
                "Write 'package.module' or 'package.module:factory'",
                line=line,
            )
            return None
        module = app.partition(":")[0]
        if module not in self.modules:
            self.modules[module] = _find_module(module, self.root)
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

    def database(self, name: str, url: str, instance_path: str) -> str | None:
        """Fill in ``{name}``/``{instance_path}`` and make a relative SQLite path absolute."""
        at, line = self.field_at(name, "database")
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
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            self.doc.problem(
                at,
                "not a database URL",
                "Write an SQLAlchemy URL such as 'sqlite:///{instance_path}/app.db'",
                line=line,
            )
            return None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            # Flask-SQLAlchemy resolves a relative SQLite path against the instance folder; do
            # the same here so the uniqueness check compares the real files.
            parsed = parsed.set(database=os.path.join(instance_path, parsed.database))
            url = parsed.render_as_string(hide_password=False)
        return url

    def check_unique(
        self, tenants: list[TenantConfig], server_names: frozenset[str] | None
    ) -> None:
        """No two tenants share a path, a host, a database or a literal SECRET_KEY."""
        paths: dict[str, TenantConfig] = {}
        hosts: dict[str, TenantConfig] = {}
        databases: dict[tuple[Any, ...], TenantConfig] = {}
        secrets: dict[str, TenantConfig] = {}
        for tenant in tenants:
            if tenant.path is not None:
                self.unique(paths, tenant.path, tenant, "path", "path")
            for host in tenant.hosts:
                self.unique(hosts, host, tenant, "hosts", "host")
                if server_names and host in server_names:
                    self.doc.problem(
                        ("tenants", tenant.name, "hosts"),
                        f"host '{host}' is also in server_names, where path mounts answer",
                        "Remove it from one of the two",
                    )
            self.unique(
                databases,
                _database_key(tenant.database_uri),
                tenant,
                "database",
                "database",
                shown=tenant.database_uri,
            )
            secret = tenant.config.get("SECRET_KEY")
            if isinstance(secret, str):
                self.unique(secrets, secret, tenant, "config", "SECRET_KEY", shown="(hidden)")
        for path, tenant in paths.items():
            parent = path.rpartition("/")[0]
            while parent:
                if parent in paths:
                    self.doc.problem(
                        ("tenants", tenant.name, "path"),
                        f"path '{path}' is inside "
                        f"'{parent}', the mount of tenant '{paths[parent].name}'",
                        "Mounts cannot nest: use a sibling path such as "
                        f"'{parent}-{path[len(parent) + 1 :].replace('/', '-')}'",
                        line=self.field_at(tenant.name, "path")[1],
                    )
                    break
                parent = parent.rpartition("/")[0]

    def unique(
        self,
        seen: dict[Any, TenantConfig],
        key: Any,
        tenant: TenantConfig,
        field: str,
        what: str,
        shown: str | None = None,
    ) -> None:
        other = seen.setdefault(key, tenant)
        if other is not tenant:
            self.doc.problem(
                ("tenants", tenant.name, field),
                f"duplicate {what} "
                f"'{key if shown is None else shown}': tenant '{other.name}' "
                f"({other.source}) has it too",
                f"Give each tenant its own {what}",
                line=self.field_at(tenant.name, field)[1],
            )


def _path_problem(path: str) -> tuple[str, str]:
    """Why a path mount is invalid, and how to fix it; ``("", "")`` if it is fine."""
    segments = path.split("/")[1:]
    clean = [s for s in path.lower().split("/") if s not in ("", ".", "..")]
    fix = f"Write '/{'/'.join(clean)}'" if clean else "Write a path such as '/acme'"
    if not path.startswith("/"):
        return "must start with '/'", fix
    if path == "/":
        return (
            "is the root",
            "A path mount needs a segment, like '/acme'; give a tenant a whole host with 'hosts:'",
        )
    if path.endswith("/"):
        return "must not end with '/'", fix
    if path != path.lower():
        return "must be lower-case", fix
    if "" in segments:
        return "has an empty segment ('//')", fix
    if "." in segments or ".." in segments:
        return "has a '.' or '..' segment", fix
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        return "has characters outside a-z, 0-9, '.', '_' and '-'", "Use only those characters"
    if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
        return f"is under '{RESERVED_PREFIX}', reserved for the dispatcher", "Choose another path"
    return "", ""


def _database_key(url: str) -> tuple[Any, ...]:
    """What makes two URLs the same database, whatever the driver or spelling."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return (backend, os.path.realpath(parsed.database or ""))
    return (backend, parsed.host, parsed.port, parsed.database)


def _find_module(module: str, root: str) -> str | None:
    """``None`` if ``module`` can be imported from ``root``, else why not."""
    add_import_root(root)
    parent, _, leaf = module.rpartition(".")
    if find_spec_without_import(module) is not None:
        return None
    hint = ""
    parent_spec = find_spec_without_import(parent) if parent else None
    if parent_spec is not None and parent_spec.submodule_search_locations:
        siblings = [m.name for m in pkgutil.iter_modules(parent_spec.submodule_search_locations)]
        close = difflib.get_close_matches(leaf, siblings, n=1)
        hint = f" (did you mean '{parent}.{close[0]}'?)" if close else ""
    return f"app module '{module}' was not found{hint}"


def find_spec_without_import(module: str) -> ModuleSpec | None:
    """Find a module's spec without running any package's ``__init__``.

    ``importlib.util.find_spec("pkg.app")`` imports ``pkg`` first; here each level is looked up
    in its parent's folders instead, so checking a file never runs tenant code.
    """
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level lookup imports nothing
        for depth in range(2, len(parts) + 1):
            locations = spec.submodule_search_locations if spec is not None else None
            if not locations:
                return None
            name = ".".join(parts[:depth])
            loaded = sys.modules.get(name)
            if loaded is not None and loaded.__spec__ is not None:
                spec = loaded.__spec__
            else:
                spec = PathFinder.find_spec(name, list(locations))
    except (ImportError, ValueError):
        return None
    return spec


def add_import_root(root: str) -> None:
    """Make the tenants file's folder importable, so ``tenants.notes`` resolves from any cwd."""
    if root not in sys.path:
        sys.path.insert(0, root)
